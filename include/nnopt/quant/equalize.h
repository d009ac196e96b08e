#pragma once
// Cross-layer equalization (CLE; Nagel et al. 2019, "Data-Free Quantization
// Through Weight Equalization and Bias Correction", sec. 4.1).
//
// For a pair  first -> [relu] -> second  of conv2d / linear layers, ReLU is
// positively homogeneous, relu(x / s) = relu(x) / s for s > 0, so scaling
// output channel i of `first` by 1/s_i and input channel i of `second` by s_i
// keeps the function. With the per-channel weight ranges
//   r1_i = max |W1[i, ...]|,  r2_i = max |W2[:, i, ...]|
// the choice  s_i = sqrt(r1_i * r2_i) / r2_i  makes both ranges sqrt(r1_i r2_i),
// which maximizes the sum of the channels' relative precisions (paper, eq. 8).
// Pairs are equalized in turn until no scale changes by more than a tolerance
// (chains of layers share channels, so one pass is not enough).
//
// ReLU6 pairs are skipped: relu6(x / s) != relu6(x) / s where the clip at 6 is
// reached, and the graph has no per-channel clip to carry 6 / s_i. The plan
// lists them with the reason. Batch norm must be folded first (a pair sees
// conv -> batch_norm otherwise and is skipped with a reason).
#include <torch/arg.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

/// One pair: `first` -> `act` (a relu node, or "" for a direct link) -> `second`.
struct EqualizePair {
  std::string first, act, second;
};

/// The pairs that can be equalized and the candidates that cannot, with why.
struct EqualizationPlan {
  std::vector<EqualizePair> pairs;
  std::vector<std::string> skipped;  ///< "conv1 -> relu6 -> conv2: relu6 is not ..."
  std::string to_string() const;
};

/// Finds pairs: `first` conv2d/linear whose only reader is a relu (or directly
/// `second`), whose only reader is a conv2d/linear `second`; `first` not the
/// output, not tapped by anything else; plain or depthwise convolutions
/// (grouped convolutions other than depthwise are skipped).
EqualizationPlan plan_equalization(const Graph& g);

struct EqualizeOptions {
  /// Sweeps over all pairs at most; default 100.
  TORCH_ARG(int64_t, max_iterations) = 100;
  /// Stop when every scale of a sweep is within [1 - tol, 1 + tol]; default 1e-4.
  TORCH_ARG(double, tolerance) = 1e-4;

 public:
  void validate() const;
};

struct EqualizeResult {
  EqualizationPlan plan;
  int64_t iterations = 0;
  /// Accumulated scale s per pair (keyed by `first`), float32 [C]: output
  /// channel i of `first` was divided by s_i.
  std::map<std::string, torch::Tensor> scales;
};

/// Equalizes `model` in place (weights and biases of the planned pairs).
/// ValueError if the model carries weight transforms on a planned layer.
EqualizeResult equalize_cross_layer(GraphModule& model, const EqualizeOptions& options = {});

/// Range of each output channel of `first` and each input channel of `second`
/// (float32 [C] each), as used above.
std::pair<torch::Tensor, torch::Tensor> pair_ranges(GraphModule& model, const EqualizePair& p);

}  // namespace nnopt
