#pragma once
// Attaching quantizers to a GraphModule, calibrating them, and moving their
// parameters to and from a scale table.
//
// Where quantizers go (plan_quantizers), following PyTorch's fused modules
// (ConvBnReLU2d, LinearReLU, add_relu) so that every fake-quant point is a
// point where the integer model holds a quantized tensor:
//   * weights: every conv2d and linear node (weight transform);
//   * activations (activation transform on the node named):
//       - the input node (QuantConfig::quantize_input);
//       - the end of each group  conv2d|linear [-> batch_norm] [-> relu|relu6],
//         a link joining only when it is the single consumer of the previous
//         node; likewise  add [-> relu|relu6]  and  batch_norm [-> relu|relu6]
//         not preceded by a conv, and concat, hardswish;
//       - avg_pool / global_avg_pool: a quantizer that *follows* the nearest
//         upstream quantizer (same scheme, copies its scale and zero point, as
//         the quantized average pool keeps its input's qparams);
//     max_pool, flatten, dropout, identity and a relu not fused into a group
//     keep values on the grid and get none.
// Batch-norm folding is a separate model transform; run it before attaching
// (the groups then are conv2d [-> relu]); folding after attaching would leave
// weight quantizers calibrated for the unfolded weights.
//
// Example:
//   auto cfg = nnopt::QuantConfig().weight(nnopt::QuantScheme(4).per_channel(true))
//                                  .activation(nnopt::QuantScheme(4).is_signed(false).symmetric(false))
//                                  .activation_observer("kl").first_last_bits(8);
//   nnopt::attach_quantizers(model, cfg);
//   nnopt::calibrate(model, calib_set, /*num_batches=*/8);
//   nnopt::export_scale_table(model).save("out/scales.json");
//   // later, on a fresh model of the same graph:
//   nnopt::apply_scale_table(fresh, nnopt::ScaleTable::load("out/scales.json"));
#include <torch/arg.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/quant/fake_quant.h"
#include "nnopt/quant/observer.h"
#include "nnopt/quant/scale_table.h"
#include "nnopt/quant/scheme.h"

namespace nnopt {

/// Bits by node name (a macro argument cannot contain the comma of std::map<K, V>).
using BitsMap = std::map<std::string, int64_t>;

struct QuantConfig {
  /// Weight scheme; default signed 8-bit symmetric per output channel (PyTorch's
  /// default qint8 per-channel weights).
  TORCH_ARG(QuantScheme, weight) = QuantScheme(8).per_channel(true);
  /// Activation scheme (per tensor); default unsigned 8-bit affine (PyTorch's quint8).
  TORCH_ARG(QuantScheme, activation) = QuantScheme(8).is_signed(false).symmetric(false);
  /// Observer of the weights ("minmax" or "moving_average" for per-channel); default "minmax".
  TORCH_ARG(std::string, weight_observer) = "minmax";
  /// Observer of the activations (any registered name); default "minmax".
  TORCH_ARG(std::string, activation_observer) = "minmax";
  /// Options for the observers.
  TORCH_ARG(ObserverOptions, observer_options) = {};
  /// Bits for the first and the last conv2d/linear layer (their weights, the
  /// input quantizer, and the quantizers feeding the last layer); 0 = no
  /// override (default). Typical: 8.
  TORCH_ARG(int64_t, first_last_bits) = 0;
  /// Per-layer weight bits by conv2d/linear node name (wins over first_last_bits).
  TORCH_ARG(BitsMap, weight_bits) = {};
  /// Per-quantizer activation bits, by the node that carries the quantizer or
  /// any node of its group (e.g. "layer1.0.conv1" for "layer1.0.relu1").
  TORCH_ARG(BitsMap, activation_bits) = {};
  /// Quantize the model input; default true.
  TORCH_ARG(bool, quantize_input) = true;

 public:
  /// Throws ValueError naming the bad option and its value.
  void validate() const;
};

/// One quantizer that plan_quantizers decided to place.
struct QuantizerSite {
  std::string node;      ///< node carrying the transform
  bool weight = false;   ///< weight transform (else activation transform)
  QuantScheme scheme;
  std::string observer;  ///< "" for followers
  std::string follows;   ///< followers: the node whose quantizer they copy
  std::string to_string() const;
};

/// Decides where quantizers go and with which scheme (see the top of this file).
/// Pure: does not touch any model. ValueError for bad config entries (unknown
/// node in weight_bits / activation_bits, bits outside [2, 8], per-channel
/// activations, a weight ch_axis beyond the weight's rank).
std::vector<QuantizerSite> plan_quantizers(const Graph& graph, const QuantConfig& config);

/// plan_quantizers + attach a FakeQuant per site, in the observe-only state
/// (data pass unchanged) until calibrate(). Replaces existing FakeQuants.
std::vector<QuantizerSite> attach_quantizers(GraphModule& model, const QuantConfig& config);

/// A FakeQuant attached to a model.
struct AttachedQuantizer {
  std::string node;
  bool weight = false;
  FakeQuantPtr fq;
};
/// The FakeQuant transforms of `model`, in graph order (weight before activation).
std::vector<AttachedQuantizer> find_quantizers(GraphModule& model);
/// Removes every FakeQuant transform (other transforms stay).
void remove_quantizers(GraphModule& model);

/// Calibrates the attached quantizers: weights from the weight tensors, then
/// activations from the first num_batches batches of `data` (batch_size
/// samples each, in order; fewer if the data end first) run in eval mode
/// without gradients, with observers seeing float values (nothing quantized
/// during the pass, as PyTorch's prepare/convert). Afterwards every quantizer
/// quantizes and stops observing. Restores the model's training flag.
/// ValueError: "calibration needs at least 1 batch, got 0", no quantizers
/// attached, batch_size < 1, empty data.
void calibrate(GraphModule& model, const Dataset& data, int64_t num_batches,
               int64_t batch_size = 64);
/// Same with explicit input batches [B, C, H, W].
void calibrate(GraphModule& model, const std::vector<torch::Tensor>& batches);

/// The attached quantizers' schemes and qparams as a scale table.
ScaleTable export_scale_table(GraphModule& model);
/// Makes the model's FakeQuants exactly those of `table` (removing others),
/// quantizing with the table's qparams, not observing. Checks everything
/// before changing the model: ValueError for an unknown node, a weight entry
/// on a node that is not conv2d/linear, a per-channel count that differs from
/// the weight's size along ch_axis, a ch_axis beyond the weight's rank,
/// per-channel activations, an unknown observer, a 'follows' naming no
/// activation entry.
void apply_scale_table(GraphModule& model, const ScaleTable& table);

}  // namespace nnopt
