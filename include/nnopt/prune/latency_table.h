#pragma once
// Predicted latency of a pruned model from per-conv measurements (a lookup
// table, as in NetAdapt, Yang et al. 2018, and AMC's latency-aware search):
// the latency of a plan = the sum over its conv layers of the measured time
// of a conv with that layer's (input channels, output channels, size), plus
// the unpruned model's non-conv time scaled by the fraction of activations
// kept. Each conv shape is timed once, on the faster of its kernels
// (deploy/conv_tuning.h: onednn or im2col + GEMM), and memoized, so a search
// that tries hundreds of plans times each distinct layer shape once.
//
// Example:
//   nnopt::ConvLatencyTable lut(deps, nnopt::ConvLatencyTable::Options().batch(64));
//   double ms = lut.predict(plan);            // ms per forward pass at batch 64
//   double full = lut.predict(ChannelPlan());  // the unpruned model
//   save(lut.to_json());  // later, without timing again:
//   auto again = nnopt::ConvLatencyTable::from_json(deps, j);
#include <torch/arg.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nnopt/prune/dependency.h"
#include "nnopt/prune/surgery.h"

namespace nnopt {

class ConvLatencyTable {
 public:
  struct Options {
    /// Batch size of the timed convs; default 1.
    TORCH_ARG(int64_t, batch) = 1;
    /// Alternating rounds per kernel and shape (median); default 3.
    TORCH_ARG(int64_t, rounds) = 3;
    /// Timed runs per round (median); default 10.
    TORCH_ARG(int64_t, repeats) = 10;

   public:
    /// ValueError naming the bad option.
    void validate() const;
  };

  /// Measures the unpruned model's whole forward pass (random weights, BN
  /// folded, tuned kernels) once, to get its non-conv time. `deps` must
  /// outlive the table.
  ConvLatencyTable(const DependencyGraph& deps, const Options& opt);

  /// Predicted ms per forward pass of the model pruned by `plan`.
  double predict(const ChannelPlan& plan);
  /// Measured ms of the unpruned model (the reference of predict).
  double measured_full_ms() const { return full_ms_; }
  /// Distinct conv shapes timed so far.
  int64_t shapes_timed() const { return static_cast<int64_t>(memo_.size()); }
  int64_t batch() const { return opt_.batch(); }

  /// The table as JSON: options, threads, the measured model, every timed shape.
  nlohmann::json to_json() const;
  /// A table saved by to_json, for the same model graph; shapes not in it are
  /// timed when first needed. ValueError naming the key if `j` is not such a table.
  static ConvLatencyTable from_json(const DependencyGraph& deps, const nlohmann::json& j);

 private:
  ConvLatencyTable(const DependencyGraph& deps, const Options& opt, bool measure);
  double conv_ms(const Node& n, const Graph& g);
  double conv_sum(const Graph& g);
  const DependencyGraph& deps_;
  Options opt_;
  double full_ms_ = 0, rest_ms_ = 0;
  int64_t full_act_ = 0;
  // (in, out, H_in, W_in, kernel, stride, padding, groups) -> ms
  std::map<std::vector<int64_t>, double> memo_;
};

}  // namespace nnopt
