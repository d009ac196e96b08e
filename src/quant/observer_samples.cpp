// SampleObserver: exact min / max plus a bounded, deterministic subsample of
// the observed values, for the observers that search over the distribution.
#include <algorithm>

#include "nnopt/core/error.h"
#include "nnopt/quant/observer.h"

namespace nnopt {

SampleObserver::SampleObserver(const QuantScheme& scheme, const ObserverOptions& options)
    : Observer(scheme, options) {
  per_batch_ = options_.max_samples();
}

void SampleObserver::reset() {
  chunks_.clear();
  kept_ = count_ = 0;
  per_batch_ = options_.max_samples();
  min_ = max_ = 0;
}

void SampleObserver::observe(const torch::Tensor& x_in) {
  torch::NoGradGuard ng;
  auto x = prepare(x_in).reshape({-1});
  auto mm = torch::aminmax(x);
  const double lo = std::get<0>(mm).item<double>(), hi = std::get<1>(mm).item<double>();
  min_ = count_ == 0 ? lo : std::min(min_, lo);
  max_ = count_ == 0 ? hi : std::max(max_, hi);
  count_ += x.numel();
  // Keep every stride-th value so that one batch adds at most per_batch_ values.
  const int64_t stride = (x.numel() + per_batch_ - 1) / per_batch_;
  auto part = stride > 1 ? x.slice(0, 0, x.numel(), stride).clone() : x.clone();
  chunks_.push_back(part);
  kept_ += part.numel();
  // Over budget: keep every other value seen so far and halve the per-batch quota.
  while (kept_ > options_.max_samples()) {
    auto all = torch::cat(chunks_);
    all = all.slice(0, 0, all.numel(), 2).clone();
    chunks_ = {all};
    kept_ = all.numel();
    per_batch_ = std::max<int64_t>(1, per_batch_ / 2);
  }
}

torch::Tensor SampleObserver::samples() const {
  NNOPT_CHECK(!empty(), ValueError, "observer '", name(), "' has observed nothing");
  return chunks_.size() == 1 ? chunks_[0] : torch::cat(chunks_);
}

std::pair<torch::Tensor, torch::Tensor> SampleObserver::clip_range(double lo, double hi) const {
  lo = std::max(lo, min_);
  hi = std::min(hi, max_);
  if (lo > hi) lo = hi = std::clamp(0.0, min_, max_);  // degenerate: keep a valid range
  return {torch::full({1}, lo, torch::kFloat32), torch::full({1}, hi, torch::kFloat32)};
}

}  // namespace nnopt
