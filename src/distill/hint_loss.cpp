// FitNets hint loss with learned 1x1 adapters; see hint_loss.h.
#include "nnopt/distill/hint_loss.h"

#include <cmath>

#include "nnopt/core/error.h"

namespace nnopt {

void HintOptions::validate() const {
  NNOPT_CHECK(weight() >= 0 && std::isfinite(weight()), ValueError,
              "hint: weight must be >= 0, got ", weight());
}

torch::Tensor hint_mse(const torch::Tensor& student, const torch::Tensor& teacher) {
  NNOPT_CHECK(student.dim() == teacher.dim() && (student.dim() == 2 || student.dim() == 4) &&
                  student.size(0) == teacher.size(0) && student.size(1) == teacher.size(1),
              ValueError, "hint: student feature ", student.sizes(), " and teacher feature ",
              teacher.sizes(), " must agree in batch, rank (2 or 4) and channels");
  if (student.dim() == 2) return torch::mse_loss(student, teacher);
  // [B, C, Hs, Ws], [B, C, Ht, Wt] -> both [B, C, min H, min W]
  int64_t h = std::min(student.size(2), teacher.size(2));
  int64_t w = std::min(student.size(3), teacher.size(3));
  return torch::mse_loss(detail::pool_to(student, h, w), detail::pool_to(teacher, h, w));
}

HintLoss::HintLoss(std::vector<TapPair> taps, HintOptions opt)
    : taps_(std::move(taps)), opt_(std::move(opt)) {
  opt_.validate();
  NNOPT_CHECK(!taps_.empty(), ValueError,
              "hint: needs at least one tap pair (--hint teacher_tap:student_tap)");
}

void HintLoss::bind(const Graph& student, const Graph& teacher, torch::nn::Module& holder) {
  adapters_.assign(taps_.size(), torch::nn::Conv2d(nullptr));
  for (size_t i = 0; i < taps_.size(); ++i) {
    detail::check_tap("hint", teacher, taps_[i].teacher, "teacher");
    detail::check_tap("hint", student, taps_[i].student, "student");
    const Shape& s = student.node(taps_[i].student).shape;
    const Shape& t = teacher.node(taps_[i].teacher).shape;
    NNOPT_CHECK(s.size() == t.size() && (s.size() == 1 || s.size() == 3), ValueError,
                "hint: student tap '", taps_[i].student, "' has shape ", c10::IntArrayRef(s),
                " and teacher tap '", taps_[i].teacher, "' has shape ", c10::IntArrayRef(t),
                "; both must be [C, H, W] or both [F]");
    if (s[0] != t[0] || opt_.always_adapt()) {
      // 1x1 regressor C_s -> C_t, trained with the student (FitNets sec. 2.2).
      auto conv = torch::nn::Conv2d(torch::nn::Conv2dOptions(s[0], t[0], 1).bias(true));
      adapters_[i] = holder.register_module("hint_" + std::to_string(i), conv);
    }
  }
}

torch::Tensor HintLoss::forward(const DistillContext& ctx) {
  NNOPT_CHECK(adapters_.size() == taps_.size(), ValueError, "hint: bind() was not called");
  torch::Tensor total;
  for (size_t i = 0; i < taps_.size(); ++i) {
    torch::Tensor s = detail::tap_value(ctx.student_taps, taps_[i].student, "student");
    const torch::Tensor& t = detail::tap_value(ctx.teacher_taps, taps_[i].teacher, "teacher");
    if (s.dim() == 4 && t.dim() == 4) {
      // Pool first: the 1x1 adapter is linear per position, so this equals pooling after it.
      s = detail::pool_to(s, std::min(s.size(2), t.size(2)), std::min(s.size(3), t.size(3)));
    }
    if (!adapters_[i].is_empty()) {
      if (s.dim() == 2) {
        s = adapters_[i]->forward(s.unsqueeze(-1).unsqueeze(-1)).flatten(1);  // [B, F_s] -> [B, F_t]
      } else {
        s = adapters_[i]->forward(s);  // [B, C_s, h, w] -> [B, C_t, h, w]
      }
    }
    auto term = hint_mse(s, t);
    total = total.defined() ? total + term : term;
  }
  return total * opt_.weight();
}

}  // namespace nnopt
