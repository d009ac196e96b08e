#pragma once
// TorchScript in and out: import a model saved by PyTorch (torch.jit.script or
// torch.jit.trace) into a Graph + weights, and export a GraphModule back to a
// TorchScript file that torch.jit.load reads.
//
// Import
//   The forward graph is inlined (keeping the prim::GetAttr chains, so that
//   each layer is named by its module path), `self.training` is replaced with
//   false (eval semantics) and other scalar attributes (`self.use_res`) with
//   their values; constant propagation, mutation removal and dead-code
//   elimination then fold the branches that scripted modules carry (prim::If
//   on `training`, F.relu's `inplace`). Shape glue (aten::size, aten::dim,
//   prim::ListConstruct, aten::Int, integer arithmetic and comparisons) is
//   evaluated with a symbolic batch dimension; a prim::If whose condition is
//   then known (`if x.dim() == 3:`) converts the branch taken. Checks that only
//   raise (prim::If with prim::RaiseException) do not feed the output and are
//   skipped. Frozen modules import too (their layers get op names).
//
//   Recognised ops: aten::conv2d, aten::_convolution (not transposed, incl.
//   groups/depthwise), aten::linear, aten::addmm (bias + x @ W.t()),
//   aten::matmul(x, W.t()) (+ bias via aten::add), aten::batch_norm,
//   aten::relu(_), aten::relu6, aten::hardtanh(_) with (0, 6), aten::clamp(0, 6),
//   aten::hardswish(_), aten::max_pool2d, aten::avg_pool2d,
//   aten::adaptive_avg_pool2d to 1x1, aten::mean over [2, 3] (-> global_avg_pool),
//   aten::flatten, aten::view / aten::reshape to [N, -1] or [N, prod],
//   aten::add(_) of two tensors with alpha 1, aten::cat, aten::dropout(_),
//   aten::feature_dropout(_) and the alpha variants, and the identities
//   aten::contiguous / clone / detach.
//
//   Naming: conv2d/linear/batch_norm nodes take the module path of their
//   weights ("layer1.0.conv1"). Other nodes take the path of the innermost leaf
//   module that ran them ("layer1.0.relu"); ops written inline in a container's
//   forward get "<container path>.<op>" ("layer1.0.add"), or "<op>" at the top.
//   Repeated names get "_1", "_2", ... ("layer1.0.relu_1").
//
// Export
//   Every node becomes a submodule at its dotted path (intermediate parts are
//   empty container modules), so the state_dict keys that PyTorch sees equal
//   nnopt's tensor names ("layer1.0.conv1.weight"). Each node module gets a
//   one-line forward; the root forward calls them in graph order. The module
//   computes eval semantics (batch norm with running statistics, dropout off)
//   whatever its training flag. Exported files import back with the same node
//   names (node modules are recognised by their class name, NnoptNode*).
#include <string>

#include "nnopt/ir/graph.h"
#include "nnopt/nn/graph_module.h"

namespace nnopt {

/// A graph with the tensors that belong to it, named like GraphModule::state().
struct ImportedModel {
  Graph graph;
  TensorMap tensors;  ///< "<node>.weight", "<node>.running_mean", ... (float32; counters int64)
};

/// Imports a TorchScript file saved by PyTorch into a Graph + weights.
/// `input_shape` is the per-sample input shape (e.g. {1, 28, 28}); the model must
/// take one tensor and return one tensor.
/// Throws FileError naming the path if the file is missing or not a TorchScript
/// archive, and GraphError listing every unsupported op (kind, module path and
/// source line) on one line.
///
/// Example:
///   auto m = nnopt::import_torchscript("resnet.pt", {3, 32, 32});
///   GraphModule gm(m.graph);
///   gm->load_state(m.tensors);
ImportedModel import_torchscript(const std::string& path, const Shape& input_shape);

/// import_torchscript, then a GraphModule with the weights loaded (in eval mode).
GraphModule import_torchscript_module(const std::string& path, const Shape& input_shape);

/// Exports `model` (graph + current weights, eval semantics) to a TorchScript file
/// that torch.jit.load reads and that gives the same outputs. Written atomically.
/// Throws ValueError naming the node if a node carries a weight or activation
/// transform (not exportable yet) or if a node name cannot become a module
/// attribute (e.g. "training", "forward"); FileError if the file cannot be written.
void export_torchscript(GraphModule& model, const std::string& path);

}  // namespace nnopt
