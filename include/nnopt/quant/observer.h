#pragma once
// Observers (range setting): they watch tensors during calibration and give
// the clipping range [min, max] from which a QuantScheme computes the scale
// and zero point.
//
//   name             range                                          per-channel
//   minmax           running min / max (PyTorch MinMaxObserver,     yes
//                    PerChannelMinMaxObserver)
//   moving_average   min/max averaged over batches with constant c  yes
//                    (PyTorch MovingAverage[PerChannel]MinMaxObserver)
//   percentile       p-th percentile of |x| (symmetric schemes) or  no
//                    the (100-p)-th / p-th percentiles of x (affine)
//   mse              shrink factor of the min/max range that        no
//                    minimizes the fake-quant MSE (grid search)
//   kl               TensorRT entropy calibration (KL divergence    no
//                    over a histogram of |x|)
//
// Example:
//   auto obs = nnopt::make_observer("kl", nnopt::QuantScheme(8));
//   for (auto& batch : batches) obs->observe(batch);
//   nnopt::QParams q = obs->qparams();
#include <torch/arg.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nnopt/quant/scheme.h"

namespace nnopt {

/// Options of the observers; each observer reads the ones it needs.
struct ObserverOptions {
  /// moving_average: c in new = old + c * (batch - old); default 0.01 (PyTorch's).
  TORCH_ARG(double, averaging_constant) = 0.01;
  /// percentile: the percentile p in (50, 100]; default 99.99.
  TORCH_ARG(double, percentile) = 99.99;
  /// mse: number of candidate ranges G (shrink factors k / G, k = 1..G); default 100.
  TORCH_ARG(int64_t, grid) = 100;
  /// kl: histogram bins over [0, max|x|]; default 2048 (TensorRT); must be
  /// >= the number of quantization levels.
  TORCH_ARG(int64_t, bins) = 2048;
  /// percentile / mse / kl: most values kept for the final search (a strided
  /// subsample when the data are larger; the exact min and max are kept
  /// aside); default 2^20.
  TORCH_ARG(int64_t, max_samples) = int64_t{1} << 20;

 public:
  /// Throws ValueError naming the bad option and its value.
  void validate() const;
};

/// Base class. Observers never change the tensors they see.
class Observer {
 public:
  Observer(const QuantScheme& scheme, const ObserverOptions& options);
  virtual ~Observer() = default;
  /// Registry name ("minmax", ...).
  virtual std::string name() const = 0;
  /// Records the statistics of `x` (detached; any shape; per-channel schemes
  /// need ch_axis < x.dim(), else ValueError "ch_axis 4 is out of range for a
  /// tensor of rank 4").
  virtual void observe(const torch::Tensor& x) = 0;
  /// The calibrated clipping range, float32 [1] (per tensor) or [C].
  /// Throws ValueError if nothing was observed.
  virtual std::pair<torch::Tensor, torch::Tensor> range() const = 0;
  /// Forgets everything observed.
  virtual void reset() = 0;
  /// True until the first observe().
  virtual bool empty() const = 0;
  /// scheme().qparams(range()).
  QParams qparams() const;
  const QuantScheme& scheme() const { return scheme_; }
  const ObserverOptions& options() const { return options_; }

 protected:
  /// x detached, float32, contiguous; checks ch_axis for per-channel schemes.
  torch::Tensor prepare(const torch::Tensor& x) const;
  /// Throws ValueError "observer 'NAME' supports per-tensor schemes only".
  void require_per_tensor() const;
  QuantScheme scheme_;
  ObserverOptions options_;
};
using ObserverPtr = std::shared_ptr<Observer>;

/// Running min / max; per tensor or per channel (PyTorch MinMaxObserver /
/// PerChannelMinMaxObserver).
class MinMaxObserver : public Observer {
 public:
  using Observer::Observer;
  std::string name() const override { return "minmax"; }
  void observe(const torch::Tensor& x) override;
  std::pair<torch::Tensor, torch::Tensor> range() const override;
  void reset() override { min_ = max_ = torch::Tensor(); }
  bool empty() const override { return !min_.defined(); }

 protected:
  torch::Tensor min_, max_;  // float32 [1] or [C]
};

/// PyTorch's MovingAverage(PerChannel)MinMaxObserver: the first batch sets
/// min/max, later batches move them by averaging_constant * (batch - running).
class MovingAverageObserver : public MinMaxObserver {
 public:
  using MinMaxObserver::MinMaxObserver;
  std::string name() const override { return "moving_average"; }
  void observe(const torch::Tensor& x) override;
};

/// Base of the observers that search over the observed distribution: keeps
/// the exact min / max and a deterministic strided subsample of the values
/// (at most options.max_samples). Per tensor only.
class SampleObserver : public Observer {
 public:
  SampleObserver(const QuantScheme& scheme, const ObserverOptions& options);
  void observe(const torch::Tensor& x) override;
  void reset() override;
  bool empty() const override { return count_ == 0; }
  /// The kept values, float32 [K].
  torch::Tensor samples() const;
  double data_min() const { return min_; }
  double data_max() const { return max_; }

 protected:
  /// [lo, hi] intersected with the observed [min, max]; float32 [1] each.
  std::pair<torch::Tensor, torch::Tensor> clip_range(double lo, double hi) const;

 private:
  std::vector<torch::Tensor> chunks_;
  int64_t kept_ = 0, count_ = 0;
  int64_t per_batch_ = 0;  // at most this many values kept per observe()
  double min_ = 0, max_ = 0;
};

/// Percentile clipping. Symmetric schemes: t = percentile(|x|, p), range
/// [-t, t] ∩ [min, max]. Affine schemes: [percentile(x, 100 - p),
/// percentile(x, p)]. Percentiles interpolate linearly between sorted samples
/// (numpy's default); p = 100 gives the exact min / max.
class PercentileObserver : public SampleObserver {
 public:
  PercentileObserver(const QuantScheme& scheme, const ObserverOptions& options);
  std::string name() const override { return "percentile"; }
  std::pair<torch::Tensor, torch::Tensor> range() const override;
};

/// MSE-optimal clipping. Candidates: the zero-including min/max range
/// [min(min, 0), max(max, 0)] scaled by a = k / G for k = 1..G (G = options.grid;
/// symmetric schemes then take max|.| as usual). Each candidate's qparams
/// fake-quantize the samples; the range with the least mean squared error
/// wins (ties: the larger range).
class MseObserver : public SampleObserver {
 public:
  MseObserver(const QuantScheme& scheme, const ObserverOptions& options);
  std::string name() const override { return "mse"; }
  std::pair<torch::Tensor, torch::Tensor> range() const override;
};

/// Entropy calibration of TensorRT (Szymon Migacz, "8-bit Inference with
/// TensorRT", NVIDIA GTC 2017), as also used by ncnn and MXNet; the algorithm
/// is described in observer_kl.cpp. Threshold t on |x|; range [-t, t] ∩ [min, max].
class KlObserver : public SampleObserver {
 public:
  KlObserver(const QuantScheme& scheme, const ObserverOptions& options);
  std::string name() const override { return "kl"; }
  std::pair<torch::Tensor, torch::Tensor> range() const override;
  /// The KL-optimal threshold on |x| (for inspection and tests).
  double threshold() const;
};

// ---- registry ----

using ObserverFactory =
    std::function<ObserverPtr(const QuantScheme&, const ObserverOptions&)>;

/// Creates an observer by name; ValueError "unknown observer 'x' (known:
/// minmax, moving_average, ...)" otherwise. Per-tensor-only observers throw
/// ValueError for per-channel schemes.
ObserverPtr make_observer(const std::string& name, const QuantScheme& scheme,
                          const ObserverOptions& options = {});
/// The registered names in registration order.
std::vector<std::string> observer_names();
/// Adds an observer (not thread-safe; call at start-up). ValueError if the
/// name is empty or already registered (the message lists the names).
void register_observer(const std::string& name, ObserverFactory factory);

}  // namespace nnopt
