// PercentileObserver: clip at a percentile of |x| (symmetric) or of both tails (affine).
#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/quant/observer.h"

namespace nnopt {

namespace {
// q in [0, 1] of sorted 1-D values, linear interpolation (numpy's default).
double quantile_sorted(const torch::Tensor& sorted, double q) {
  const int64_t n = sorted.numel();
  const double pos = q * static_cast<double>(n - 1);
  const int64_t i = static_cast<int64_t>(std::floor(pos));
  const int64_t j = std::min<int64_t>(i + 1, n - 1);
  const float* p = sorted.data_ptr<float>();
  const double f = pos - static_cast<double>(i);
  return static_cast<double>(p[i]) + f * (static_cast<double>(p[j]) - static_cast<double>(p[i]));
}
}  // namespace

PercentileObserver::PercentileObserver(const QuantScheme& scheme,
                                       const ObserverOptions& options)
    : SampleObserver(scheme, options) {
  require_per_tensor();
}

std::pair<torch::Tensor, torch::Tensor> PercentileObserver::range() const {
  torch::NoGradGuard ng;
  auto s = samples();
  const double p = options_.percentile() / 100.0;
  if (p >= 1.0) return clip_range(data_min(), data_max());
  if (scheme_.symmetric()) {
    auto sorted = std::get<0>(s.abs().sort()).contiguous();
    const double t = quantile_sorted(sorted, p);
    return clip_range(-t, t);
  }
  auto sorted = std::get<0>(s.sort()).contiguous();
  return clip_range(quantile_sorted(sorted, 1.0 - p), quantile_sorted(sorted, p));
}

}  // namespace nnopt
