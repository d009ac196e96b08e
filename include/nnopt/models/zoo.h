#pragma once
// The model zoo: named builders that return an nnopt::Graph.
//
// Every model matches a PyTorch reference (tests/py/zoo_reference.py) exactly:
// node names are the dotted module paths of the reference, so the parameter
// and buffer names of a GraphModule built from the graph are the reference's
// state_dict keys, and num_params()/macs() agree with PyTorch's counts.
//
// Example:
//   nnopt::ModelOptions opt;
//   opt.input_shape = {3, 32, 32};
//   nnopt::Graph g = nnopt::build_model("resnet20", opt);   // 272,474 params
//   nnopt::GraphModule m(g);
//   auto logits = m->forward(torch::randn({8, 3, 32, 32}));  // [8, 10]
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "nnopt/ir/graph.h"

namespace nnopt {

/// Options shared by every zoo model; a family ignores the fields it has no use for.
struct ModelOptions {
  /// Per-sample input shape [C, H, W]; default {1, 28, 28}. mlp also takes
  /// any other rank. Minimum H and W: lenet5 12, vgg-small 8, resnet and
  /// mobilenetv2 1.
  std::vector<int64_t> input_shape = {1, 28, 28};
  /// Number of output logits; default 10; must be >= 2.
  int64_t num_classes = 10;
  /// Width multiplier of every model's channels (mlp, lenet5: also the hidden
  /// units); default 1.0; must be > 0.
  double width = 1.0;
  /// ResNet depth 6n+2 (8, 14, 20, 32, 56, 110, ...); default 20. Used by
  /// "resnet" only; the "resnetN" names fix the depth themselves.
  int64_t depth = 20;
  /// Dropout probability in [0, 1) of a dropout node right before the final
  /// linear layer ("dropout"; "classifier.0" in mobilenetv2); default 0.0 =
  /// no node. Every family supports it.
  double dropout = 0.0;
};

/// Builds a zoo model by name: "mlp", "lenet5", "vgg-small", "resnet" (depth
/// from options), "resnet8", "resnet14", "resnet20", "resnet32", "resnet56",
/// "mobilenetv2". The input node is named "input".
/// Throws ValueError on an unknown name (the message lists the known names)
/// and on bad options (the message names the option and its value).
Graph build_model(const std::string& name, const ModelOptions& opt = {});

/// The known model names, in registration order.
std::vector<std::string> model_names();

using ModelBuilder = std::function<Graph(const ModelOptions&)>;
/// Adds a model to the registry (not thread-safe; call at start-up). Throws
/// ValueError if the name is empty or already registered.
void register_model(const std::string& name, ModelBuilder builder);

// ---- the family builders behind the registry (same contract as build_model) ----

/// flatten -> fc1 256 -> relu1 -> fc2 128 -> relu2 -> fc3 num_classes.
Graph build_mlp(const ModelOptions& opt);
/// Classic LeNet-5 with max pooling; conv1 pads 2 when H or W < 32, else 0.
Graph build_lenet5(const ModelOptions& opt);
/// VGG-style [64, 64, M, 128, 128, M, 256, 256, M] conv-BN-ReLU blocks
/// (channels x width), global average pool, fc.
Graph build_vgg_small(const ModelOptions& opt);
/// CIFAR ResNet (He et al. 2016) of opt.depth with 1x1 conv + BN projection
/// shortcuts (option B) where the shape changes.
Graph build_resnet(const ModelOptions& opt);
/// MobileNetV2 (Sandler et al. 2018), torchvision layout, CIFAR strides.
Graph build_mobilenetv2(const ModelOptions& opt);

namespace detail {
/// round(channels * width), at least 1 (floor(c * w + 0.5), as the Python reference).
int64_t scale_channels(int64_t channels, double width);
/// torchvision's _make_divisible: nearest multiple of `divisor`, at least
/// `divisor`, never below 90% of v.
int64_t make_divisible(double v, int64_t divisor = 8);
/// Checks the options every family shares (num_classes, width, dropout,
/// input_shape > 0); throws ValueError naming `model`, the option and its value.
void check_options(const std::string& model, const ModelOptions& opt);
/// Checks that opt.input_shape is [C, H, W] with H, W >= min_hw; throws
/// ValueError naming input_shape and `model`.
void check_image_input(const std::string& model, const ModelOptions& opt, int64_t min_hw);
/// Adds the dropout node `dropout_name` (only when opt.dropout > 0) and the
/// final linear `fc_name` with opt.num_classes outputs; returns the linear's name.
std::string add_classifier(Graph& g, const std::string& in,
                           const std::string& dropout_name, const std::string& fc_name,
                           const ModelOptions& opt);
}  // namespace detail

}  // namespace nnopt
