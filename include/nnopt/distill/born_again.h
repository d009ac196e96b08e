#pragma once
// Born-again networks (Furlanello et al. 2018, "Born-Again Neural Networks",
// ICML, arXiv:1805.04770): a sequence of generations of the same
// architecture; generation 1 learns from the labels alone, generation k is
// taught by generation k-1 (a fresh initialization each time).
//
// Example:
//   nnopt::BornAgainOptions o(3);
//   o.train(nnopt::TrainOptions(10)).out_dir("runs/ban");
//   auto r = nnopt::born_again(nnopt::build_model("resnet20", mo), train, test, o);
//   // r.test_accuracy[k] for generation k+1, checkpoints in runs/ban/gen<k>/model.nnopt
#include <torch/arg.h>

#include <string>
#include <vector>

#include "nnopt/distill/distill_callback.h"
#include "nnopt/distill/distill_loss.h"
#include "nnopt/ir/graph.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

struct BornAgainOptions {
  BornAgainOptions() = default;
  explicit BornAgainOptions(int64_t generations) : generations_(generations) {}
  /// Number of generations (>= 1); default 3.
  TORCH_ARG(int64_t, generations) = 3;
  /// Training recipe of every generation; its out_dir is replaced by OUT/gen<k>.
  /// The seed of generation k is mix_seed(seed, k), so generations start from
  /// different initializations.
  TORCH_ARG(TrainOptions, train) = TrainOptions();
  /// Losses of generations >= 2 (built afresh for each); default plain KD.
  TORCH_ARG(std::vector<LossSpec>, losses) = {LossSpec{"kd", {}, {}}};
  /// Weights of generations >= 2 (generation 1 uses ce weight 1).
  TORCH_ARG(DistillOptions, distill) = DistillOptions();
  /// Folder for gen1/, gen2/, ... ("" = write nothing).
  TORCH_ARG(std::string, out_dir) = "";

 public:
  void validate() const;
};

struct BornAgainResult {
  std::vector<double> test_accuracy;  ///< one per generation, in [0, 1]
  std::vector<TrainResult> runs;      ///< one per generation
  std::vector<std::string> checkpoints;  ///< OUT/gen<k>/model.nnopt (empty without out_dir)
  GraphModule last = nullptr;         ///< the final generation
};

/// Trains opt.generations() models of `arch` (see above) on `train`, validating
/// and testing on `test`.
BornAgainResult born_again(const Graph& arch, const Dataset& train, const Dataset& test,
                           const BornAgainOptions& opt);

}  // namespace nnopt
