#pragma once
// Post-training quantization (PTQ): fold batch norm -> attach quantizers ->
// calibrate on N batches -> [per-channel MSE weight ranges] -> [AdaRound]
// -> [empirical bias correction] -> a fake-quant model + its scale table.
//
// The returned model is a folded GraphModule with calibrated FakeQuants; it
// lowers to integer kernels at 8 bits (deploy/int8.h) and saves with
// save_quantized_model (the scale table rides in the checkpoint metadata, so
// load_model / `nnopt eval` re-attach the quantizers).
//
// Example:
//   auto opt = nnopt::PtqOptions().calib_batches(8).bias_correction(true);
//   opt.config(nnopt::QuantConfig().activation_observer("percentile"));
//   nnopt::PtqResult r = nnopt::run_ptq(fp32, train_set, opt);
//   r.table.save("out/scales.json");
//   nnopt::save_quantized_model("out/model.nnopt", r.model);
#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/quant/adaround.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/bias_correction.h"
#include "nnopt/quant/scale_table.h"

namespace nnopt {

struct PtqOptions {
  /// Where quantizers go and with which schemes / observers (quant/attach.h).
  TORCH_ARG(QuantConfig, config) = QuantConfig();
  /// Calibration batches (>= 1); default 8.
  TORCH_ARG(int64_t, calib_batches) = 8;
  /// Samples per calibration batch (>= 1); default 64.
  TORCH_ARG(int64_t, batch_size) = 64;
  /// Fold batch norm into the preceding conv/linear first; default true
  /// (integer lowering needs it).
  TORCH_ARG(bool, fold_bn) = true;
  /// Instead of folding: keep the batch norms and quantize under batch-norm
  /// fold simulation (GraphModuleImpl::set_bn_fold_simulation), the start
  /// for QAT; in eval mode the result equals the folded one. Default false.
  TORCH_ARG(bool, bn_fold_simulation) = false;
  /// Weight ranges by a per-channel (or per-tensor) MSE grid search over
  /// shrink factors of max|W| instead of the weight observer; default false.
  TORCH_ARG(bool, weight_mse) = false;
  /// Empirical bias correction after calibration (bias_correction.h); default false.
  TORCH_ARG(bool, bias_correction) = false;
  /// Options of the bias correction.
  TORCH_ARG(BiasCorrectionOptions, bias_correction_options) = {};
  /// AdaRound the weights of layers with <= adaround_options.max_bits bits
  /// (adaround.h); default false. Not combined with bias_correction.
  TORCH_ARG(bool, adaround) = false;
  /// Options of AdaRound.
  TORCH_ARG(AdaRoundOptions, adaround_options) = {};

 public:
  /// Throws ValueError naming the bad option and its value.
  void validate() const;
};

struct PtqResult {
  GraphModule model{nullptr};          ///< folded fake-quant model, eval mode
  ScaleTable table;                    ///< its quantizers
  std::vector<BiasShift> bias_shifts;  ///< one per corrected layer (bias_correction)
  std::vector<AdaRoundLayer> adaround; ///< one per AdaRounded layer
  double seconds = 0;
};

/// Runs the pipeline on a copy of `fp32` (unchanged; it must carry no
/// transforms). Calibration uses the first calib_batches batches of `calib`.
/// ValueError for bad options, empty data, a model with transforms.
PtqResult run_ptq(GraphModule& fp32, const Dataset& calib, const PtqOptions& options);

// ---- building blocks shared by the PTQ algorithms ----

/// A new GraphModule of the same graph with copies of the parameters and
/// buffers (transforms not copied; ValueError if `model` carries any), in eval mode.
GraphModule clone_plain(GraphModule& model);

/// The first `num_batches` batches of `data` in order ([B, C, H, W] views).
/// ValueError for num_batches < 1 ("calibration needs at least 1 batch, got 0"),
/// batch_size < 1 or empty data.
std::vector<torch::Tensor> take_batches(const Dataset& data, int64_t num_batches,
                                        int64_t batch_size);

/// conv2d / linear node `n` applied to `x` with explicit weight and bias
/// (bias may be undefined). [N, ...] -> [N, ...]
torch::Tensor layer_forward(const Node& n, const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias);

/// Names of the conv2d / linear nodes in graph order.
std::vector<std::string> layer_nodes(const Graph& g);

/// Calibrates only the weight quantizers (from the weight tensors with their
/// observers) and switches them to quantizing. Data-free.
void calibrate_weights(GraphModule& model);

/// Sets each weight quantizer's range by a grid search (grid G: ranges
/// k/G * max|W| per channel, k = 1..G) minimizing the squared rounding error
/// of the weights, per channel for per-channel schemes. Symmetric schemes only
/// (ValueError naming the node otherwise).
void set_weight_ranges_mse(GraphModule& model, int64_t grid = 100);

/// Saves a fake-quant model: save_model with its scale table in the metadata
/// under "scale_table" (merged into `meta_json`, an object); load_model
/// re-attaches the quantizers. FileError naming the path.
void save_quantized_model(const std::string& path, GraphModule& model,
                          const std::string& meta_json = "{}");

}  // namespace nnopt
