// QuantScheme: integer ranges and PyTorch-exact qparams from (min, max).
#include "nnopt/quant/scheme.h"

#include <cmath>
#include <limits>

#include "nnopt/core/error.h"

namespace nnopt {

QuantScheme::QuantScheme(int64_t bits) : bits_(bits) { validate(); }

void QuantScheme::validate() const {
  NNOPT_CHECK(bits_ >= 2 && bits_ <= 8, ValueError, "bits must be in [2, 8], got ", bits_);
  NNOPT_CHECK(ch_axis_ >= 0, ValueError, "ch_axis must be >= 0, got ", ch_axis_);
}

int64_t QuantScheme::quant_min() const {
  int64_t lo = is_signed_ ? -(int64_t{1} << (bits_ - 1)) : 0;
  return narrow_range_ ? lo + 1 : lo;
}

int64_t QuantScheme::quant_max() const {
  return is_signed_ ? (int64_t{1} << (bits_ - 1)) - 1 : (int64_t{1} << bits_) - 1;
}

bool QuantScheme::custom_range() const { return bits_ != 8 || narrow_range_; }

QParams QuantScheme::qparams(const torch::Tensor& min_in, const torch::Tensor& max_in) const {
  validate();
  torch::NoGradGuard ng;
  NNOPT_CHECK(min_in.defined() && max_in.defined(), ValueError, "qparams: min/max undefined");
  auto min_val = min_in.detach().to(torch::kFloat32).reshape({-1});
  auto max_val = max_in.detach().to(torch::kFloat32).reshape({-1});
  NNOPT_CHECK(min_val.numel() == max_val.numel() && min_val.numel() >= 1, ValueError,
              "qparams: min has ", min_val.numel(), " elements but max has ", max_val.numel());
  NNOPT_CHECK(per_channel_ || min_val.numel() == 1, ValueError,
              "qparams: a per-tensor scheme needs one min/max, got ", min_val.numel());
  const int64_t n = min_val.numel();
  const float inf = std::numeric_limits<float>::infinity();
  // PyTorch's check_min_max_valid: nothing observed -> scale 1, zero point 0.
  if (min_val.eq(inf).all().item<bool>() && max_val.eq(-inf).all().item<bool>())
    return {torch::ones({n}, torch::kFloat32), torch::zeros({n}, torch::kInt64)};
  NNOPT_CHECK(min_val.le(max_val).all().item<bool>(), ValueError,
              "qparams: min > max (min ", min_val, ", max ", max_val, ")");

  const int64_t qmin = quant_min(), qmax = quant_max();
  // Line by line as observer.py's _calculate_qparams, so that results are bitwise equal.
  auto eps = torch::full({1}, std::numeric_limits<float>::epsilon(), torch::kFloat32);
  auto min_val_neg = torch::minimum(min_val, torch::zeros_like(min_val));
  auto max_val_pos = torch::maximum(max_val, torch::zeros_like(max_val));
  torch::Tensor scale, zero_point = torch::zeros({n}, torch::kInt64);
  if (symmetric_) {
    max_val_pos = torch::maximum(-min_val_neg, max_val_pos);
    scale = max_val_pos / (static_cast<double>(qmax - qmin) / 2);
    scale = torch::maximum(scale, eps);
    if (!is_signed_) {
      const int64_t zp = custom_range() ? (qmin + qmax) / 2 : 128;  // qmin >= 0: / is floor
      zero_point.fill_(zp);
    }
  } else {
    scale = (max_val_pos - min_val_neg) / static_cast<double>(qmax - qmin);
    scale = torch::maximum(scale, eps);
    zero_point = qmin - torch::round(min_val_neg / scale).to(torch::kInt32);
    zero_point = torch::clamp(zero_point, qmin, qmax).to(torch::kInt64);
  }
  return {scale.contiguous(), zero_point.contiguous()};
}

std::string QuantScheme::describe() const {
  std::string s = str_cat(is_signed_ ? "s" : "u", bits_, symmetric_ ? " symmetric" : " affine");
  if (narrow_range_) s += " narrow";
  s += per_channel_ ? str_cat(" per-channel(", ch_axis_, ")") : std::string(" per-tensor");
  return s;
}

bool QuantScheme::operator==(const QuantScheme& o) const {
  return bits_ == o.bits_ && is_signed_ == o.is_signed_ && symmetric_ == o.symmetric_ &&
         per_channel_ == o.per_channel_ && (!per_channel_ || ch_axis_ == o.ch_axis_) &&
         narrow_range_ == o.narrow_range_;
}

void check_qparams(const QuantScheme& scheme, const QParams& q, int64_t channels,
                   const std::string& what) {
  scheme.validate();
  NNOPT_CHECK(q.scale.defined() && q.zero_point.defined(), ValueError, what,
              ": scale or zero_point missing");
  NNOPT_CHECK(q.scale.dim() == 1 && q.zero_point.dim() == 1, ValueError, what,
              ": scale and zero_point must be 1-D, got ", q.scale.sizes(), " and ",
              q.zero_point.sizes());
  const int64_t n = q.scale.numel();
  NNOPT_CHECK(q.zero_point.numel() == n, ValueError, what, ": ", n, " scales but ",
              q.zero_point.numel(), " zero points");
  if (!scheme.per_channel()) {
    NNOPT_CHECK(n == 1, ValueError, what, ": a per-tensor scheme needs 1 scale, got ", n);
  } else if (channels >= 0) {
    NNOPT_CHECK(n == channels, ValueError, what, ": per-channel scheme (axis ",
                scheme.ch_axis(), ") needs ", channels, " scales, got ", n);
  }
  auto s = q.scale.to(torch::kFloat64);
  NNOPT_CHECK(torch::isfinite(s).all().item<bool>() && s.gt(0).all().item<bool>(), ValueError,
              what, ": every scale must be finite and > 0");
  auto z = q.zero_point.to(torch::kInt64);
  NNOPT_CHECK(z.ge(scheme.quant_min()).all().item<bool>() &&
                  z.le(scheme.quant_max()).all().item<bool>(),
              ValueError, what, ": zero points must be in [", scheme.quant_min(), ", ",
              scheme.quant_max(), "], got min ", z.min().item<int64_t>(), " max ",
              z.max().item<int64_t>());
}

std::vector<int64_t> dims_except(int64_t rank, int64_t axis) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < rank; ++d)
    if (d != axis) dims.push_back(d);
  return dims;
}

}  // namespace nnopt
