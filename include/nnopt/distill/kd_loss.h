#pragma once
// Soft-target knowledge distillation (Hinton, Vinyals, Dean 2015,
// "Distilling the Knowledge in a Neural Network", arXiv:1503.02531).
//
//   kd = KL(softmax(t / T) || softmax(s / T)) * T^2,   averaged over the batch
//
// The T^2 factor keeps the gradient magnitude of the soft term roughly
// independent of T (Hinton et al., sec. 2: the gradients scale as 1/T^2).
// For large T the loss tends to 1/(2K) * sum_i (d_i - mean(d))^2 with
// d = t - s (the logit-matching limit of sec. 2.1); the tests check this.
#include <torch/arg.h>
#include <torch/torch.h>

#include "nnopt/distill/distill_loss.h"

namespace nnopt {

struct KdOptions {
  KdOptions() = default;
  explicit KdOptions(double temperature) : temperature_(temperature) {}
  /// Softmax temperature T (> 0); default 4. Spec keys "T" or "temperature".
  TORCH_ARG(double, temperature) = 4.0;
  /// Weight of the soft-target term, in [0, 1]; default 0.9. The student's own
  /// cross-entropy gets 1 - alpha unless DistillOptions::ce_weight says otherwise.
  TORCH_ARG(double, alpha) = 0.9;

 public:
  /// Throws ValueError naming the option and its value.
  void validate() const;
};

/// KL(softmax(t/T) || softmax(s/T)) * T^2, batchmean. [B, K], [B, K] -> scalar.
/// Works in the logits' dtype; gradients flow into `student_logits` only if the
/// caller detaches the teacher (DistillCallback computes the teacher without grad).
torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                      double temperature);

/// Registry name "kd"; spec keys T (or temperature), alpha. Value: alpha * kd_loss.
class KdLoss : public DistillLoss {
 public:
  /// Validates `opt` (ValueError naming the option and value).
  explicit KdLoss(KdOptions opt = {});
  std::string name() const override { return "kd"; }
  torch::Tensor forward(const DistillContext& ctx) override;
  double soft_target_weight() const override { return opt_.alpha(); }
  const KdOptions& options() const { return opt_; }

 private:
  KdOptions opt_;
};

}  // namespace nnopt
