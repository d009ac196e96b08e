#pragma once
// Profiling: parameters, MACs, size on disk, latency.
#include <functional>
#include <string>
#include <vector>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

struct LatencyOptions {
  int64_t warmup = 5;       ///< untimed runs first
  int64_t repeats = 30;     ///< timed runs; the median is reported
  double max_seconds = 20;  ///< stop repeating early once this much time is spent (>= 3 repeats)
};

struct Latency {
  int64_t batch = 1;
  double median_ms = 0, p10_ms = 0, p90_ms = 0;
  int64_t repeats = 0;
  int threads = 1;
  double images_per_sec() const { return median_ms > 0 ? 1000.0 * batch / median_ms : 0; }
};

/// Times `fn` (one forward pass of `batch` samples): warm-up, then repeats; median and spread.
Latency time_forward(const std::function<void()>& fn, int64_t batch, const LatencyOptions& opt = {});
/// Alternating rounds: calls measure[0](), measure[1](), ..., then again, `rounds` times, and
/// returns the median of each one's results (e.g. milliseconds). A slow spell of a shared machine
/// then falls on every measurement alike: use it whenever timings are compared with each other.
std::vector<double> alternating_medians(const std::vector<std::function<double()>>& measure, int64_t rounds);
/// One forward pass of some model on a batch (int8, fp32, fake-quant, ...).
using ForwardFn = std::function<void(const torch::Tensor&)>;
/// The latency (median ms) of each forward on one random batch of shape {batch, input_shape...},
/// without grad, timed in turn over `rounds` alternating rounds (time_forward inside
/// alternating_medians). Every comparison of models' latencies in nnopt goes through this.
std::vector<double> alternating_forward_latency(const std::vector<ForwardFn>& forwards,
                                                const std::vector<int64_t>& input_shape, int64_t batch,
                                                int64_t rounds, const LatencyOptions& opt = {});
/// Latency of `model` in eval mode, no grad, on random input of the model's input shape.
Latency measure_latency(GraphModule& model, int64_t batch, const LatencyOptions& opt = {});

struct ModelProfile {
  int64_t params = 0;
  int64_t macs = 0;          ///< per sample
  int64_t size_bytes = 0;    ///< size of the nnopt checkpoint
  std::vector<Latency> latency;
  std::string to_json() const;
  std::string to_table() const;
};

/// Profiles `model`: counts from the graph, checkpoint size, latency at each batch size.
ModelProfile profile_model(GraphModule& model, const std::vector<int64_t>& batches,
                           const LatencyOptions& opt = {});

}  // namespace nnopt
