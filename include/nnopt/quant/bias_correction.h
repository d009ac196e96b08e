#pragma once
// Empirical bias correction (Nagel et al. 2019, "Data-Free Quantization
// Through Weight Equalization and Bias Correction", sec. 4.2, empirical
// variant; Finkelstein et al. 2019, "Fighting Quantization Bias With Bias").
//
// Quantizing a layer's weights, W -> Q(W), shifts the expected output by
//   E[Q(W) x] - E[W x] = (Q(W) - W) E[x]   (per output channel)
// For each conv2d / linear layer in graph order we measure on calibration
// data, with x the layer's input in the quantized model (so every earlier
// correction is already in place),
//   delta = E[W x] - E[Q(W) x]     (mean over batch and spatial positions)
// and add delta to the layer's bias. The analytic, data-free form of the same
// correction lives in dfq.h.
#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

struct BiasCorrectionOptions {
  /// Skip layers whose weight quantizer has more bits than this; default 8 (all).
  TORCH_ARG(int64_t, max_bits) = 8;

 public:
  void validate() const;
};

/// What the correction did to one layer.
struct BiasShift {
  std::string node;
  double mean_abs_shift = 0;  ///< mean |delta| over output channels
  double max_abs_shift = 0;   ///< max |delta|
};

/// Corrects the biases of `model` (fake-quant weights attached and
/// calibrated) with the calibration `batches` ([B, *input_shape]). Layers
/// without a bias or without a quantizing weight FakeQuant are left alone.
/// ValueError for no batches or no quantized layer.
std::vector<BiasShift> correct_bias_empirical(GraphModule& model,
                                              const std::vector<torch::Tensor>& batches,
                                              const BiasCorrectionOptions& options = {});

}  // namespace nnopt
