#pragma once
// Distillation losses: the common interface, loss specs ("kd:T=4,alpha=0.9")
// and the registry of losses by name.
//
// A loss compares the student with the teacher on the same batch: logits
// ([B, K] each) and, for feature losses, the outputs of named nodes ("taps")
// of both models. It is bound once to the two graphs (checks that the taps
// exist and fit, creates learned adapters) and then evaluated every step by
// DistillCallback. The value it returns is already weighted (alpha, beta,
// gamma, weight), so the callback just sums the terms.
//
// Built-in losses (registry names): "kd" (kd_loss.h), "hint" (hint_loss.h),
// "at" (attention_loss.h), "sp" (similarity_loss.h).
//
// Example:
//   auto spec = nnopt::parse_loss_spec("kd:T=4,alpha=0.9");
//   nnopt::DistillLossPtr kd = nnopt::make_distill_loss(spec);
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nnopt/ir/graph.h"
#include "nnopt/nn/graph_module.h"

namespace nnopt {

/// A teacher node paired with a student node whose outputs a feature loss compares.
struct TapPair {
  std::string teacher;  ///< node name in the teacher graph
  std::string student;  ///< node name in the student graph
  bool operator==(const TapPair& o) const { return teacher == o.teacher && student == o.student; }
};

/// Parses "teacher_tap:student_tap"; throws ValueError naming `what` (e.g. "--hint").
TapPair parse_tap_pair(const std::string& text, const std::string& what);

/// A loss by name with its options as text and its tap pairs.
struct LossSpec {
  std::string name;                                         ///< registry name, e.g. "kd"
  std::vector<std::pair<std::string, std::string>> params;  ///< key=value, in the given order
  std::vector<TapPair> taps;                                ///< feature losses only
  /// "kd:T=4,alpha=0.9" (taps not included).
  std::string to_string() const;
};

/// Parses "name[:key=value,key=value...]". Throws ValueError (one line) for an
/// empty name, a part without '=', an empty key or a repeated key. Whether the
/// name and keys are known is checked by make_distill_loss.
LossSpec parse_loss_spec(const std::string& text);

/// What a loss sees at each step. Student values carry gradients, teacher values do not.
struct DistillContext {
  torch::Tensor student_logits;            ///< [B, K]
  torch::Tensor teacher_logits;            ///< [B, K] (an ensemble's combined logits)
  const TensorMap* student_taps = nullptr; ///< node name -> output, for the student taps
  const TensorMap* teacher_taps = nullptr; ///< node name -> output, for the teacher taps
};

class DistillLoss {
 public:
  virtual ~DistillLoss() = default;
  /// Registry name; also the key of the term in TrainState::step_terms and metrics ("loss_<name>").
  virtual std::string name() const = 0;
  /// Tap pairs this loss compares (empty for logit losses).
  virtual std::vector<TapPair> tap_pairs() const { return {}; }
  /// Checks the taps against both graphs (GraphError naming the tap and the
  /// model if one is missing, ValueError for shapes that cannot be compared)
  /// and creates learned modules (adapters), registering them on `holder` so
  /// that they train with the student. Called once, before training.
  virtual void bind(const Graph& student, const Graph& teacher, torch::nn::Module& holder) {}
  /// The weighted loss, a scalar.
  virtual torch::Tensor forward(const DistillContext& ctx) = 0;
  /// Weight of the soft-target term (KD's alpha); the default cross-entropy
  /// weight of DistillCallback is 1 - this (-1: the loss has no such weight).
  virtual double soft_target_weight() const { return -1; }
};
using DistillLossPtr = std::shared_ptr<DistillLoss>;

using DistillLossFactory = std::function<DistillLossPtr(const LossSpec&)>;

/// Adds a loss to the registry (not thread-safe; call at start-up). Throws
/// ValueError for an empty name or one that is already registered (listing the known names).
void register_distill_loss(const std::string& name, DistillLossFactory factory);
/// Builds a registered loss from a spec. Throws ValueError for an unknown name
/// (listing the known names), an unknown key (listing the loss's keys), a
/// value that is not a number or out of range (naming the option and value).
DistillLossPtr make_distill_loss(const LossSpec& spec);
/// Registered names, sorted: {"at", "hint", "kd", "sp"} plus any added.
std::vector<std::string> distill_loss_names();

namespace detail {
/// Throws ValueError unless every key of spec.params is in `keys` (the message lists them).
void check_spec_keys(const LossSpec& spec, const std::vector<std::string>& keys);
/// Parses a number for option `key` of loss `loss`; ValueError naming both and the text.
double spec_number(const std::string& loss, const std::string& key, const std::string& value);
/// Throws GraphError unless `graph` has a node `tap`: "<loss>: tap 'x' does not exist in the <which> (nodes: ...)".
void check_tap(const std::string& loss, const Graph& graph, const std::string& tap,
               const std::string& which);
/// Pools a [B, C, H, W] map to [B, C, h, w] by adaptive average pooling; `x` itself if already that size.
torch::Tensor pool_to(const torch::Tensor& x, int64_t h, int64_t w);
/// The tap's value in a context map; throws ValueError if the trainer did not provide it.
const torch::Tensor& tap_value(const TensorMap* taps, const std::string& name,
                               const std::string& which);
}  // namespace detail

}  // namespace nnopt
