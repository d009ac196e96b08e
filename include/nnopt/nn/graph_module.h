#pragma once
// GraphModule: a torch::nn::Module that runs an nnopt::Graph.
//
// Parameters and buffers live under the node names, exactly as PyTorch would
// name them: node "stage1.block0.conv1" owns "stage1.block0.conv1.weight".
// Each node can carry two extension points (both are submodules, so their own
// parameters — a learned step size, a clip value — train with the model):
//   * a weight transform, applied to conv2d/linear weights before use
//     (fake-quant, pruning mask);
//   * an activation transform, applied to the node's output (activation
//     quantizer).
// Taps return intermediate outputs by node name (distillation hints, HRank
// feature maps, sensitivity).
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nnopt/ir/graph.h"

namespace nnopt {

/// A tensor-to-tensor transform attached to a node. Subclass it; register any
/// learnable values as parameters so that optimizers see them.
class TransformImpl : public torch::nn::Module {
 public:
  /// [any shape] -> [same shape]
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  /// Short name for summaries, e.g. "lsq(4)".
  virtual std::string describe() const { return "transform"; }
  /// True if forward(relu(x)) == forward(x) in value and in the gradients
  /// (to x and to the transform's own parameters) for every x != 0: the
  /// transform clips below at 0 with zero gradient there (unsigned
  /// activation quantizers with zero point 0). A ReLU node whose output goes
  /// only into such a transform is then skipped: one pass over the
  /// activation less in the forward and in the backward pass. (At x == 0
  /// exactly, ReLU's subgradient is 0 and the quantizer's 1.)
  virtual bool absorbs_relu() const { return false; }
};
using TransformPtr = std::shared_ptr<TransformImpl>;

/// The convolution kernel a conv2d node runs. kAuto is LibTorch's own choice
/// (at::conv2d: onednn for most shapes, im2col + GEMM for small single
/// images); the other two force one of them. deploy/conv_tuning.h picks per
/// node by timing both on the node's real input (the faster one differs per
/// layer: a 1-channel stem conv runs 15x faster on im2col + GEMM at batch 64,
/// a 64-channel 3x3 conv 2x faster on onednn). All three give the same values.
enum class ConvKernel : int8_t {
  kAuto,
  kOnednn,  ///< at::mkldnn_convolution
  kNative,  ///< at::thnn_conv2d (im2col + GEMM); ungrouped, undilated convs only
};

/// The module that holds one node's tensors (and is the container for the
/// nodes whose names extend its own). Fields are undefined where not used.
class NodeModuleImpl : public torch::nn::Module {
 public:
  torch::Tensor weight, bias;               // conv2d, linear, batch_norm (affine)
  torch::Tensor running_mean, running_var;  // batch_norm
  torch::Tensor num_batches_tracked;        // batch_norm
  TransformPtr weight_transform;
  TransformPtr act_transform;
  ConvKernel conv_kernel = ConvKernel::kAuto;  // conv2d only; not saved with the model
};

using TensorMap = std::map<std::string, torch::Tensor>;

class GraphModuleImpl : public torch::nn::Module {
 public:
  /// Builds the parameters for `graph` with PyTorch's default initialization
  /// (kaiming-normal fan_out for convs, as torchvision's ResNet; nn.Linear's
  /// default for linear; ones/zeros for batch norm). Uses the global torch RNG.
  explicit GraphModuleImpl(Graph graph);

  /// [N, *input_shape] -> [N, *output_shape]
  torch::Tensor forward(const torch::Tensor& x);
  /// Same, and stores the outputs of the nodes named in `taps` into `out`.
  /// Throws GraphError if a tap names no node.
  torch::Tensor forward(const torch::Tensor& x, const std::vector<std::string>& taps,
                        TensorMap& out);

  const Graph& graph() const { return graph_; }

  /// The module holding node `name`'s tensors; throws GraphError if unknown.
  NodeModuleImpl& node_module(const std::string& name);

  /// Attach (or with nullptr remove) a weight transform on a conv2d/linear node.
  void set_weight_transform(const std::string& node, TransformPtr t);
  /// Attach (or with nullptr remove) a transform on the output of any node.
  void set_activation_transform(const std::string& node, TransformPtr t);

  /// The weight as used in forward (after the weight transform, if any).
  torch::Tensor effective_weight(const std::string& node);
  /// What the node's weight transform sees: the weight, or under batch-norm
  /// fold simulation the folded weight W * s.
  torch::Tensor weight_transform_input(const std::string& node);

  /// Batch-norm fold simulation for quantization-aware training (Jacob et
  /// al. 2018, sec. 3.2; PyTorch's ConvBn2d QAT modules). Each conv2d/linear
  /// that fold_batch_norm would fold (nn/fold_bn.h) runs with the weight
  ///   transform(W * s) / s,   s = gamma / sqrt(running_var + eps) per channel
  ///   (1 / sqrt(running_var + eps) where gamma = 0: that channel's output is
  ///   beta whatever its weights, and 0 / 0 would make it NaN),
  /// so its weight transform (a quantizer) sees the folded weight, while the
  /// batch norm stays a node: in training it normalizes with the batch
  /// statistics, which keeps QAT stable where the folded graph diverges
  /// (resnet20 at lr 0.01, docs/results.md); in eval mode the model equals
  /// the folded model with the same transforms, and fold_batch_norm then
  /// moves the transforms over unchanged. Off by default; not saved.
  void set_bn_fold_simulation(bool on);
  bool bn_fold_simulation() const { return fold_sim_; }

  /// Run convolutions in channels-last (NHWC) memory order: conv weights are
  /// stored NHWC (same tensors, other strides) and the input is reordered
  /// once, so every op after it keeps that order and onednn convolves
  /// without reordering each tensor to its blocked layout and back (lenet5
  /// training step 1.8x, resnet20 1.2x faster; docs/results.md). Values are
  /// the same up to float rounding. Off again restores NCHW weights. Not
  /// saved with the model (checkpoints store values, not strides).
  /// A graph with grouped (depthwise) convs stays NCHW: LibTorch 1.13's
  /// NHWC depthwise backward gave weight gradients that differ from the
  /// NCHW ones by up to 2.7 on mobilenetv2 (ZooForward.ChannelsLast*).
  /// A graph with weight or activation transforms (quantizers, masks) stays
  /// NCHW too, and attaching one switches the order back to NCHW: with
  /// quantizers on NHWC tensors the QAT tests aborted with a double free
  /// inside LibTorch 1.13's convolution backward (session 8).
  void set_channels_last(bool on);
  bool channels_last() const { return channels_last_; }

  /// Threads of an eval-mode forward pass (0: the process's count). A small
  /// model at batch 1 can run faster on one thread than on two (resnet20,
  /// 2 cores: 1.76 vs 2.07 ms), so deployment tuning picks the count per
  /// batch size (tune_deployment in deploy/conv_tuning.h). Training passes
  /// ignore it. Not saved with the model.
  void set_run_threads(int n) { run_threads_ = n > 0 ? n : 0; }
  int run_threads() const { return run_threads_; }

  /// All parameters and buffers by full name (transforms' tensors included).
  TensorMap state() const;
  /// Copies tensors by name. With strict, missing or unexpected names and
  /// shape mismatches throw ValueError naming the tensor.
  void load_state(const TensorMap& tensors, bool strict = true);

 private:
  torch::Tensor run(const torch::Tensor& x, const std::vector<std::string>* taps, TensorMap* out);
  torch::Tensor layer_weight(size_t i);  // node i's weight as used in forward
  torch::Tensor fold_factor(size_t i);   // [C, 1, ...]: s of node i's batch norm under fold simulation
  NodeModuleImpl& ensure_path(const std::string& dotted);
  Graph graph_;
  std::vector<std::shared_ptr<NodeModuleImpl>> mods_;  // indexed like graph_.nodes()
  std::vector<std::vector<size_t>> input_index_;       // node -> indices of its inputs
  std::vector<int> last_use_;                          // node -> last node index reading it
  std::vector<char> inplace_ok_;  // relu/relu6 node may overwrite its input (see constructor)
  std::vector<int> relu_to_pool_;  // relu node -> the max_pool that applies it after pooling, or -1
  bool channels_last_ = false;
  int run_threads_ = 0;
  bool fold_sim_ = false;
  std::vector<int> fold_bn_;  // conv2d/linear node -> index of the batch norm it folds into, or -1
};
TORCH_MODULE(GraphModule);

}  // namespace nnopt
