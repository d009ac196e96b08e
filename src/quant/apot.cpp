// APoT (Li et al., ICLR 2020): additive powers-of-two levels, RCF clip,
// weight normalization. Formulas in quant/apot.h.
#include "nnopt/quant/apot.h"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

#include "nnopt/core/error.h"

namespace nnopt {

torch::Tensor apot_levels(int64_t m) {
  NNOPT_CHECK(m >= 1 && m <= 8, ValueError, "APoT: magnitude bits must be in [1, 8], got ", m);
  const int64_t n = (m + 1) / 2;
  std::vector<std::vector<double>> terms(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = (i == n - 1 && m % 2 == 1) ? 1 : 2;
    terms[i].push_back(0.0);
    for (int64_t j = 0; j <= (int64_t{1} << k) - 2; ++j)
      terms[i].push_back(std::ldexp(1.0, -static_cast<int>(i + j * n)));
  }
  std::vector<double> sums = {0.0};
  for (const auto& t : terms) {
    std::vector<double> next;
    for (double s : sums)
      for (double p : t) next.push_back(s + p);
    sums.swap(next);
  }
  std::set<double> uniq(sums.begin(), sums.end());
  NNOPT_CHECK(static_cast<int64_t>(uniq.size()) == (int64_t{1} << m), ValueError,
              "APoT: internal error, ", uniq.size(), " distinct levels for ", m, " bits");
  const double mx = *uniq.rbegin();
  std::vector<float> v;
  for (double s : uniq) v.push_back(static_cast<float>(s / mx));
  return torch::tensor(v, torch::kFloat32);
}

torch::Tensor apot_quantize(const torch::Tensor& x, const torch::Tensor& alpha,
                            const torch::Tensor& levels, bool is_signed) {
  torch::Tensor a = alpha.clamp_min(1e-8).reshape({});
  torch::Tensor xn = x / a;
  torch::Tensor xc = is_signed ? xn.clamp(-1.0, 1.0) : xn.clamp(0.0, 1.0);
  torch::Tensor q;
  {
    torch::NoGradGuard ng;
    torch::Tensor mid = (levels.slice(0, 1) + levels.slice(0, 0, -1)) * 0.5;
    torch::Tensor mag = xc.abs();
    // Nearest level: the number of midpoints below |x| (ties go up).
    torch::Tensor idx = torch::bucketize(mag, mid, /*out_int32=*/false, /*right=*/true);
    q = levels.index({idx});
    if (is_signed) q = q * torch::sign(xc);
  }
  q = xc + (q - xc).detach();  // straight-through; alpha's gradient: Pi - x/alpha inside, +-1 outside
  return q * a;
}

ApotQuantizerImpl::ApotQuantizerImpl(const QuantScheme& scheme, bool weight, bool signed_grid,
                                     double alpha)
    : QatQuantizerImpl(scheme), weight_(weight), signed_(signed_grid) {
  NNOPT_CHECK(std::isfinite(alpha) && alpha > 0, ValueError, "APoT: alpha must be > 0, got ", alpha);
  alpha_ = register_parameter("alpha", torch::full({1}, alpha, torch::kFloat32));
  grid_ = register_buffer("grid", apot_levels(signed_grid ? scheme.bits() - 1 : scheme.bits()));
  sigma_ = register_buffer("sigma", torch::ones({1}, torch::kFloat32));
}

torch::Tensor ApotQuantizerImpl::forward(const torch::Tensor& x) {
  if (!weight_) return apot_quantize(x, alpha_, grid_, signed_);
  torch::Tensor mu, sigma;
  {
    torch::NoGradGuard ng;
    mu = x.mean();
    sigma = (x.numel() > 1 ? x.std() : torch::ones({})).clamp_min(1e-12);
    sigma_.fill_(sigma.item<float>());
  }
  return apot_quantize((x - mu) / sigma, alpha_, grid_, signed_) * sigma;
}

std::string ApotQuantizerImpl::describe() const {
  return std::string("apot(") + scheme_.describe() + (signed_ ? ", signed grid)" : ")");
}

torch::Tensor ApotQuantizerImpl::levels(int64_t channel) const {
  NNOPT_CHECK(channel == 0, ValueError, "APoT: per-layer quantizer has only channel 0, got ",
              channel);
  torch::Tensor g = grid_;
  if (signed_) g = torch::cat({-grid_.slice(0, 1).flip(0), grid_});
  torch::Tensor a = alpha_.detach().clamp_min(1e-8);
  return weight_ ? g * a * sigma_ : g * a;
}

QatQuantizerPtr make_apot_quantizer(const QuantizerInit& init) {
  const QuantScheme& s = init.scheme;
  if (init.weight) {
    NNOPT_CHECK(init.value.defined(), ValueError, "APoT: a weight quantizer needs the weight");
    torch::NoGradGuard ng;
    torch::Tensor w = init.value.detach().to(torch::kFloat32);
    torch::Tensor wn = (w - w.mean()) / (w.numel() > 1 ? w.std() : torch::ones({})).clamp_min(1e-12);
    torch::Tensor grid = apot_levels(s.bits() - 1);
    const double mx = std::max(wn.abs().max().item<double>(), 1e-6);
    double best_alpha = mx, best_err = INFINITY;
    for (int k = 1; k <= 100; ++k) {
      const double a = mx * k / 100.0;
      const double err =
          (apot_quantize(wn, torch::full({1}, a, torch::kFloat32), grid, true) - wn)
              .square()
              .mean()
              .item<double>();
      if (err < best_err) {
        best_err = err;
        best_alpha = a;
      }
    }
    return std::make_shared<ApotQuantizerImpl>(s, true, true, best_alpha);
  }
  const double scale = init.qparams.scale.item<double>();
  const int64_t z = init.qparams.zero_point.item<int64_t>();
  const bool negatives = s.is_signed() || z > s.quant_min();
  const double up = scale * static_cast<double>(s.quant_max() - z);
  const double down = scale * static_cast<double>(z - s.quant_min());
  const double alpha = negatives ? std::max(up, down) : up;
  return std::make_shared<ApotQuantizerImpl>(s, false, negatives, alpha);
}

}  // namespace nnopt
