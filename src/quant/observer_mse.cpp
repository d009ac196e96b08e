// MseObserver: grid search of the clipping range that minimizes the
// fake-quantization mean squared error on the observed values.
#include <algorithm>
#include <limits>

#include "nnopt/core/error.h"
#include "nnopt/quant/fake_quant.h"
#include "nnopt/quant/observer.h"

namespace nnopt {

MseObserver::MseObserver(const QuantScheme& scheme, const ObserverOptions& options)
    : SampleObserver(scheme, options) {
  require_per_tensor();
}

std::pair<torch::Tensor, torch::Tensor> MseObserver::range() const {
  torch::NoGradGuard ng;
  auto s = samples();
  const double lo0 = std::min(data_min(), 0.0), hi0 = std::max(data_max(), 0.0);
  auto as_range = [](double lo, double hi) {
    return std::make_pair(torch::full({1}, lo, torch::kFloat32), torch::full({1}, hi, torch::kFloat32));
  };
  if (lo0 == hi0) return as_range(lo0, hi0);  // all zero
  const int64_t g = options_.grid();
  double best = std::numeric_limits<double>::infinity();
  int64_t best_k = g;
  // Largest range first, strict improvement: ties keep the larger range.
  for (int64_t k = g; k >= 1; --k) {
    const double a = static_cast<double>(k) / static_cast<double>(g);
    auto q = scheme_.qparams(torch::full({1}, lo0 * a, torch::kFloat32),
                             torch::full({1}, hi0 * a, torch::kFloat32));
    const double err = (fake_quantize(s, scheme_, q) - s).square().mean().item<double>();
    if (err < best) {
      best = err;
      best_k = k;
    }
  }
  const double a = static_cast<double>(best_k) / static_cast<double>(g);
  // The candidate as evaluated (it contains 0, so qparams see exactly this range).
  return as_range(lo0 * a, hi0 * a);
}

}  // namespace nnopt
