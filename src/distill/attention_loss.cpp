// Attention transfer (Zagoruyko & Komodakis 2017); see attention_loss.h.
#include "nnopt/distill/attention_loss.h"

#include <cmath>

#include "nnopt/core/error.h"

namespace nnopt {

namespace {
// [B, C, H, W] -> [B, 1, H, W]: mean_c |A_c|^p (unnormalized)
torch::Tensor raw_attention(const torch::Tensor& f, double p) {
  NNOPT_CHECK(f.dim() == 4, ValueError, "at: features must be [B, C, H, W], got ", f.sizes());
  auto a = p == 2.0 ? f.pow(2) : f.abs().pow(p);
  return a.mean(1, /*keepdim=*/true);
}

torch::Tensor normalized_rows(const torch::Tensor& a) {
  // [B, 1, H, W] -> [B, H*W], each row divided by max(||row||_2, 1e-12) (F.normalize)
  return torch::nn::functional::normalize(
      a.flatten(1), torch::nn::functional::NormalizeFuncOptions().p(2).dim(1).eps(1e-12));
}
}  // namespace

void AtOptions::validate() const {
  NNOPT_CHECK(beta() >= 0 && std::isfinite(beta()), ValueError, "at: beta must be >= 0, got ",
              beta());
  NNOPT_CHECK(p() > 0 && std::isfinite(p()), ValueError, "at: p must be > 0, got ", p());
  NNOPT_CHECK(form() == "code" || form() == "paper", ValueError,
              "at: form must be 'code' or 'paper', got '", form(), "'");
}

torch::Tensor attention_map(const torch::Tensor& features, double p) {
  return normalized_rows(raw_attention(features, p));
}

torch::Tensor at_loss(const torch::Tensor& student, const torch::Tensor& teacher, double p,
                      const std::string& form) {
  NNOPT_CHECK(student.dim() == 4 && teacher.dim() == 4 && student.size(0) == teacher.size(0),
              ValueError, "at: student feature ", student.sizes(), " and teacher feature ",
              teacher.sizes(), " must be [B, C, H, W] with the same B");
  auto as = raw_attention(student, p), at = raw_attention(teacher, p);
  int64_t h = std::min(as.size(2), at.size(2)), w = std::min(as.size(3), at.size(3));
  auto qs = normalized_rows(detail::pool_to(as, h, w));
  auto qt = normalized_rows(detail::pool_to(at, h, w));
  auto d = qs - qt;  // [B, h*w]
  if (form == "paper") return d.norm(2, 1).mean();
  NNOPT_CHECK(form == "code", ValueError, "at: form must be 'code' or 'paper', got '", form, "'");
  return d.pow(2).mean();
}

AtLoss::AtLoss(std::vector<TapPair> taps, AtOptions opt)
    : taps_(std::move(taps)), opt_(std::move(opt)) {
  opt_.validate();
  NNOPT_CHECK(!taps_.empty(), ValueError,
              "at: needs at least one tap pair (--at teacher_tap:student_tap)");
}

void AtLoss::bind(const Graph& student, const Graph& teacher, torch::nn::Module&) {
  auto check_map = [](const Graph& g, const std::string& name, const char* which) {
    NNOPT_CHECK(g.node(name).shape.size() == 3, ValueError, "at: ", which, " tap '", name,
                "' has shape ", c10::IntArrayRef(g.node(name).shape),
                "; attention maps need [C, H, W]");
  };
  for (const auto& tp : taps_) {
    detail::check_tap("at", teacher, tp.teacher, "teacher");
    detail::check_tap("at", student, tp.student, "student");
    check_map(student, tp.student, "student");
    check_map(teacher, tp.teacher, "teacher");
  }
}

torch::Tensor AtLoss::forward(const DistillContext& ctx) {
  torch::Tensor total;
  for (const auto& tp : taps_) {
    auto term = at_loss(detail::tap_value(ctx.student_taps, tp.student, "student"),
                        detail::tap_value(ctx.teacher_taps, tp.teacher, "teacher"), opt_.p(),
                        opt_.form());
    total = total.defined() ? total + term : term;
  }
  return total * (opt_.beta() / 2);
}

}  // namespace nnopt
