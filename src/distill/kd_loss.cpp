// Hinton et al. 2015 soft-target loss; see kd_loss.h.
#include "nnopt/distill/kd_loss.h"

#include <cmath>

#include "nnopt/core/error.h"

namespace nnopt {

void KdOptions::validate() const {
  NNOPT_CHECK(temperature() > 0 && std::isfinite(temperature()), ValueError,
              "kd: temperature T must be > 0, got ", temperature());
  NNOPT_CHECK(alpha() >= 0 && alpha() <= 1, ValueError, "kd: alpha must be in [0, 1], got ",
              alpha());
}

torch::Tensor kd_loss(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                      double temperature) {
  NNOPT_CHECK(temperature > 0, ValueError, "kd: temperature T must be > 0, got ", temperature);
  NNOPT_CHECK(student_logits.dim() == 2 && student_logits.sizes() == teacher_logits.sizes(),
              ValueError, "kd: student logits ", student_logits.sizes(), " and teacher logits ",
              teacher_logits.sizes(), " must both be [B, K]");
  // [B, K] -> scalar: sum_b sum_k p (log p - log q) / B, computed from log-softmax
  // on both sides (no log(0) for saturated teachers).
  auto log_q = torch::log_softmax(student_logits / temperature, 1);
  auto log_p = torch::log_softmax(teacher_logits / temperature, 1);
  auto kl = (log_p.exp() * (log_p - log_q)).sum() / student_logits.size(0);
  return kl * (temperature * temperature);
}

KdLoss::KdLoss(KdOptions opt) : opt_(std::move(opt)) { opt_.validate(); }

torch::Tensor KdLoss::forward(const DistillContext& ctx) {
  return kd_loss(ctx.student_logits, ctx.teacher_logits, opt_.temperature()) * opt_.alpha();
}

}  // namespace nnopt
