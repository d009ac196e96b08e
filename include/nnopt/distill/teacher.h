#pragma once
// Teachers for distillation: one model or an ensemble, loaded from files or
// given as live GraphModules (the fp32 model for QAT, the unpruned model for
// pruning).
//
// A teacher always runs in eval mode (batch norm with running statistics,
// dropout off) without gradients, on the batch the student sees. The training
// flag of each member is restored afterwards, so a live model shared with
// other code is left as it was.
//
// Ensembles combine their members' logits z_1..z_M [B, K] into one [B, K]:
//   "logits": mean_m z_m
//   "probs":  log(mean_m softmax(z_m)), the log of the averaged probabilities
//             (at temperature 1). KD then uses softmax(that / T), i.e. the
//             averaged distribution sharpened or flattened by T:
//             softmax(log p / T) = p^(1/T) / sum p^(1/T); at T = 1 the soft
//             target is exactly the mean probability.
// Feature taps (hint, at, sp) need a single teacher.
//
// Teacher outputs are cached by DistillCallback, not here: it knows each
// batch's dataset positions and whether it was augmented (see
// DistillOptions::cache_teacher).
//
// Example:
//   auto teacher = nnopt::load_teacher({"a.nnopt", "b.pt"}, {1, 28, 28},
//                                      nnopt::EnsembleMode::kProbs);
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

enum class EnsembleMode { kLogits, kProbs };

/// "logits" | "probs"; ValueError otherwise.
EnsembleMode ensemble_mode_from_name(const std::string& name);
const char* ensemble_mode_name(EnsembleMode mode);

/// Combines member logits (each [B, K]) as described above -> [B, K]. A single
/// member's logits are returned as they are (in "probs" mode they differ from
/// log softmax only by a per-row constant, which softmax and KD ignore).
/// ValueError for an empty list or differing shapes.
torch::Tensor ensemble_logits(const std::vector<torch::Tensor>& member_logits, EnsembleMode mode);

class Teacher {
 public:
  /// A single model.
  explicit Teacher(GraphModule model);
  /// An ensemble; members must agree in input shape and class count
  /// (ValueError naming the member and both values).
  Teacher(std::vector<GraphModule> members, EnsembleMode mode);

  size_t size() const { return members_.size(); }
  EnsembleMode mode() const { return mode_; }
  /// Member 0's graph (the one feature taps refer to).
  const Graph& graph() const { return members_.front()->graph(); }
  const std::vector<GraphModule>& members() const { return members_; }
  /// Output size K of the (first) member.
  int64_t num_classes() const;
  /// Per-sample input shape, e.g. {1, 28, 28}.
  const Shape& input_shape() const { return graph().input_shape(); }

  /// Combined logits [B, K] in eval mode without gradients; when `taps` is not
  /// empty, fills `out` with those node outputs of the single member
  /// (ValueError for an ensemble). x: [B, *input_shape].
  torch::Tensor forward(const torch::Tensor& x, const std::vector<std::string>& taps,
                        TensorMap& out);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  std::vector<GraphModule> members_;
  EnsembleMode mode_ = EnsembleMode::kLogits;
};
using TeacherPtr = std::shared_ptr<Teacher>;

/// One teacher file: a path ending in ".pt" is imported as TorchScript with
/// `input_shape` (the student's); anything else is read as an nnopt checkpoint.
/// FileError / GraphError from the loaders name the path.
GraphModule load_teacher_model(const std::string& path, const Shape& input_shape);
/// One teacher per path; several make an ensemble combined by `mode`.
TeacherPtr load_teacher(const std::vector<std::string>& paths, const Shape& input_shape,
                        EnsembleMode mode = EnsembleMode::kLogits);

/// Cross-entropy and top-1 accuracy of the combined teacher on `data`.
EvalResult evaluate_teacher(Teacher& teacher, const Dataset& data, int64_t batch_size = 1000);

}  // namespace nnopt
