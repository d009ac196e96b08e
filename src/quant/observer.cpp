// Observer base class and ObserverOptions.
#include "nnopt/quant/observer.h"

#include "nnopt/core/error.h"

namespace nnopt {

void ObserverOptions::validate() const {
  NNOPT_CHECK(averaging_constant_ > 0 && averaging_constant_ <= 1, ValueError,
              "averaging_constant must be in (0, 1], got ", averaging_constant_);
  NNOPT_CHECK(percentile_ > 50 && percentile_ <= 100, ValueError,
              "percentile must be in (50, 100], got ", percentile_);
  NNOPT_CHECK(grid_ >= 1, ValueError, "grid must be >= 1, got ", grid_);
  NNOPT_CHECK(bins_ >= 4, ValueError, "bins must be >= 4, got ", bins_);
  NNOPT_CHECK(max_samples_ >= 16, ValueError, "max_samples must be >= 16, got ", max_samples_);
}

Observer::Observer(const QuantScheme& scheme, const ObserverOptions& options)
    : scheme_(scheme), options_(options) {
  scheme_.validate();
  options_.validate();
}

QParams Observer::qparams() const {
  auto r = range();
  return scheme_.qparams(r.first, r.second);
}

torch::Tensor Observer::prepare(const torch::Tensor& x) const {
  NNOPT_CHECK(x.defined() && x.numel() > 0, ValueError, "observer '", name(),
              "': empty tensor");
  if (scheme_.per_channel())
    NNOPT_CHECK(scheme_.ch_axis() < x.dim(), ValueError, "ch_axis ", scheme_.ch_axis(),
                " is out of range for a tensor of rank ", x.dim());
  return x.detach().to(torch::kFloat32).contiguous();
}

void Observer::require_per_tensor() const {
  NNOPT_CHECK(!scheme_.per_channel(), ValueError, "observer '", name(),
              "' supports per-tensor schemes only (use minmax or moving_average per channel)");
}

}  // namespace nnopt
