#pragma once
// Importance criteria for structured (channel) pruning, registered by name.
// A criterion scores every unit (channel) of every dependency group; higher
// means keep. One file per criterion (src/prune/criterion_<name>.cpp):
//
//   name    score of a channel                                        needs data
//   l1      L1 norm of its filters (Li et al. 2017)                    no
//   l2      L2 norm of its filters                                     no
//   fpgm    sum of Euclidean distances of its filter to the layer's    no
//           other filters; near the geometric median = redundant
//           (He et al. 2019, "Filter Pruning via Geometric Median")
//   bn      |gamma| of its batch norms (Liu et al. 2017, network       no
//           slimming; train with BnL1Callback for sparse scales)
//   taylor  first-order Taylor: (sum over the channel's parameters of  yes
//           grad * weight)^2, averaged over batches (Molchanov et al.
//           2019, "Importance Estimation for Neural Network Pruning")
//   hrank   average rank of its feature maps over the data (Lin et     yes
//           al. 2020, "HRank")
//   random  uniform in [0, 1) from the seed (baseline)                 no
//
// Group importance (how a channel's score combines its group's members):
//   * l1, l2, fpgm: the mean over the layers that own an output filter of the
//     channel (every conv feeding a residual add, a depthwise conv tied to its
//     expansion) of that layer's score for the filter;
//   * bn: the mean |gamma| over the channel's batch norms; channels without a
//     batch norm score +inf (never pruned);
//   * taylor: one sum over all the channel's output filters, biases and
//     batch-norm weights and biases, squared (the paper's group form);
//   * hrank: the mean over the activation outputs (relu, relu6, hardswish)
//     that carry the channel (the conv outputs if there are none); channels of
//     vector features (linear layers) use the mean |activation| instead, as a
//     1-pixel map has rank 0 or 1.
// Ranking across groups (global pruning) normalizes each group by its mean
// score (prune/target.h); within a group, raw scores are compared.
//
// Example:
//   auto imp = nnopt::make_importance("fpgm");
//   std::vector<torch::Tensor> s = imp->score(model, deps, {});  // one [units] tensor per group
#include <torch/arg.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/prune/dependency.h"

namespace nnopt {

/// A few labelled batches for the data-driven criteria (taylor, hrank).
struct ImportanceData {
  std::vector<torch::Tensor> inputs;  ///< [B, *input_shape] each
  std::vector<torch::Tensor> labels;  ///< int64 [B] each
  /// The first `batches` batches of `batch_size` samples of `d`, in order.
  static ImportanceData from_dataset(const Dataset& d, int64_t batches, int64_t batch_size);
  bool empty() const { return inputs.empty(); }
};

struct ImportanceOptions {
  /// random: seed of the scores; default 0.
  TORCH_ARG(uint64_t, seed) = 0;

 public:
  void validate() const {}
};

class Importance {
 public:
  explicit Importance(ImportanceOptions options) : options_(options) {}
  virtual ~Importance() = default;
  /// Registry name ("l1", ...).
  virtual std::string name() const = 0;
  /// True if score() needs batches (ValueError naming the criterion otherwise).
  virtual bool needs_data() const { return false; }
  /// One float64 tensor [group.size()] per group of `deps`, in the same order.
  /// The model's training flag is restored; its parameters are unchanged.
  virtual std::vector<torch::Tensor> score(GraphModule& model, const DependencyGraph& deps,
                                           const ImportanceData& data) = 0;

 protected:
  /// Throws ValueError "criterion 'taylor' needs data" when data is empty and needs_data().
  void require_data(const ImportanceData& data) const;
  ImportanceOptions options_;
};
using ImportancePtr = std::shared_ptr<Importance>;
using ImportanceFactory = std::function<ImportancePtr(const ImportanceOptions&)>;

/// Makes a registered criterion; ValueError listing the names for an unknown one.
ImportancePtr make_importance(const std::string& name, const ImportanceOptions& options = {});
std::vector<std::string> importance_names();
/// ValueError for an empty or already registered name.
void register_importance(const std::string& name, ImportanceFactory factory);

// ---- helpers shared by the criteria ----

/// For each unit of `g`: the mean over its slices of `role` of
/// layer_score(slice.node)[slice.index]; +inf where the unit has no such slice.
/// layer_score is called once per node and returns a float64 [channels] tensor.
torch::Tensor mean_over_slices(const DependencyGroup& g, SliceRole role,
                               const std::function<torch::Tensor(const std::string&)>& layer_score);

// ---- the built-in criteria (same contract as Importance) ----

class L1Importance : public Importance {
 public:
  using Importance::Importance;
  std::string name() const override { return "l1"; }
  std::vector<torch::Tensor> score(GraphModule&, const DependencyGraph&, const ImportanceData&) override;
};
class L2Importance : public Importance {
 public:
  using Importance::Importance;
  std::string name() const override { return "l2"; }
  std::vector<torch::Tensor> score(GraphModule&, const DependencyGraph&, const ImportanceData&) override;
};
class FpgmImportance : public Importance {
 public:
  using Importance::Importance;
  std::string name() const override { return "fpgm"; }
  std::vector<torch::Tensor> score(GraphModule&, const DependencyGraph&, const ImportanceData&) override;
};
class BnScaleImportance : public Importance {
 public:
  using Importance::Importance;
  std::string name() const override { return "bn"; }
  std::vector<torch::Tensor> score(GraphModule&, const DependencyGraph&, const ImportanceData&) override;
};
class TaylorImportance : public Importance {
 public:
  using Importance::Importance;
  std::string name() const override { return "taylor"; }
  bool needs_data() const override { return true; }
  std::vector<torch::Tensor> score(GraphModule&, const DependencyGraph&, const ImportanceData&) override;
};
class HRankImportance : public Importance {
 public:
  using Importance::Importance;
  std::string name() const override { return "hrank"; }
  bool needs_data() const override { return true; }
  std::vector<torch::Tensor> score(GraphModule&, const DependencyGraph&, const ImportanceData&) override;
};
class RandomImportance : public Importance {
 public:
  using Importance::Importance;
  std::string name() const override { return "random"; }
  std::vector<torch::Tensor> score(GraphModule&, const DependencyGraph&, const ImportanceData&) override;
};

}  // namespace nnopt
