// Similarity-preserving KD (Tung & Mori 2019); see similarity_loss.h.
#include "nnopt/distill/similarity_loss.h"

#include <cmath>

#include "nnopt/core/error.h"

namespace nnopt {

void SpOptions::validate() const {
  NNOPT_CHECK(gamma() >= 0 && std::isfinite(gamma()), ValueError, "sp: gamma must be >= 0, got ",
              gamma());
}

torch::Tensor similarity_matrix(const torch::Tensor& features) {
  NNOPT_CHECK(features.dim() >= 2, ValueError, "sp: features must be [B, ...], got ",
              features.sizes());
  auto q = features.flatten(1);  // [B, D]
  auto g = q.mm(q.t());          // [B, B], eq. (2)
  return torch::nn::functional::normalize(   // eq. (3): rows / their L2 norm
      g, torch::nn::functional::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
}

torch::Tensor sp_loss(const torch::Tensor& student, const torch::Tensor& teacher) {
  NNOPT_CHECK(student.dim() >= 2 && teacher.dim() >= 2 && student.size(0) == teacher.size(0),
              ValueError, "sp: student feature ", student.sizes(), " and teacher feature ",
              teacher.sizes(), " must have the same batch size");
  int64_t b = student.size(0);
  auto d = similarity_matrix(teacher) - similarity_matrix(student);
  return d.pow(2).sum() / static_cast<double>(b * b);  // eq. (4)
}

SpLoss::SpLoss(std::vector<TapPair> taps, SpOptions opt)
    : taps_(std::move(taps)), opt_(std::move(opt)) {
  opt_.validate();
  NNOPT_CHECK(!taps_.empty(), ValueError,
              "sp: needs at least one tap pair (--sp teacher_tap:student_tap)");
}

void SpLoss::bind(const Graph& student, const Graph& teacher, torch::nn::Module&) {
  for (const auto& tp : taps_) {
    detail::check_tap("sp", teacher, tp.teacher, "teacher");
    detail::check_tap("sp", student, tp.student, "student");
  }
}

torch::Tensor SpLoss::forward(const DistillContext& ctx) {
  torch::Tensor total;
  for (const auto& tp : taps_) {
    auto term = sp_loss(detail::tap_value(ctx.student_taps, tp.student, "student"),
                        detail::tap_value(ctx.teacher_taps, tp.teacher, "teacher"));
    total = total.defined() ? total + term : term;
  }
  return total * opt_.gamma();
}

}  // namespace nnopt
