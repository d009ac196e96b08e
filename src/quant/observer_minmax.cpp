// MinMaxObserver: running min / max, as PyTorch's MinMaxObserver and
// PerChannelMinMaxObserver (torch/ao/quantization/observer.py).
#include "nnopt/core/error.h"
#include "nnopt/quant/observer.h"

namespace nnopt {

namespace {
// [any] -> ([1], [1]) or, per channel, [.., C at axis, ..] -> ([C], [C])
std::pair<torch::Tensor, torch::Tensor> batch_minmax(const torch::Tensor& x,
                                                     const QuantScheme& s) {
  if (!s.per_channel()) {
    auto mm = torch::aminmax(x);
    return {std::get<0>(mm).reshape({1}), std::get<1>(mm).reshape({1})};
  }
  auto y = x.transpose(0, s.ch_axis()).flatten(1);  // [C, rest]
  auto mm = torch::aminmax(y, 1);
  return {std::get<0>(mm), std::get<1>(mm)};
}
}  // namespace

void MinMaxObserver::observe(const torch::Tensor& x_in) {
  torch::NoGradGuard ng;
  auto x = prepare(x_in);
  auto [lo, hi] = batch_minmax(x, scheme_);
  if (empty()) {
    min_ = lo;
    max_ = hi;
    return;
  }
  NNOPT_CHECK(lo.numel() == min_.numel(), ValueError, "observer '", name(), "': saw ",
              min_.numel(), " channels before, now ", lo.numel());
  min_ = torch::minimum(min_, lo);
  max_ = torch::maximum(max_, hi);
}

std::pair<torch::Tensor, torch::Tensor> MinMaxObserver::range() const {
  NNOPT_CHECK(!empty(), ValueError, "observer '", name(), "' has observed nothing");
  return {min_, max_};
}

void MovingAverageObserver::observe(const torch::Tensor& x_in) {
  torch::NoGradGuard ng;
  auto x = prepare(x_in);
  if (empty()) {
    MinMaxObserver::observe(x);
    return;
  }
  std::pair<torch::Tensor, torch::Tensor> cur;
  if (!scheme_.per_channel()) {
    auto mm = torch::aminmax(x);
    cur = {std::get<0>(mm).reshape({1}), std::get<1>(mm).reshape({1})};
  } else {
    auto mm = torch::aminmax(x.transpose(0, scheme_.ch_axis()).flatten(1), 1);
    cur = {std::get<0>(mm), std::get<1>(mm)};
  }
  NNOPT_CHECK(cur.first.numel() == min_.numel(), ValueError, "observer '", name(), "': saw ",
              min_.numel(), " channels before, now ", cur.first.numel());
  // PyTorch: min_val = min_val + averaging_constant * (min_val_cur - min_val)
  const double c = options_.averaging_constant();
  min_ = min_ + (cur.first - min_) * c;
  max_ = max_ + (cur.second - max_) * c;
}

}  // namespace nnopt
