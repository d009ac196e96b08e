#pragma once
// Batch-norm folding: conv2d/linear followed by batch_norm becomes one conv2d/
// linear with bias, for inference (PTQ, integer lowering, pruned deployment).
//   W' = W * g / sqrt(var + eps)        (per output channel)
//   b' = (b - mean) * g / sqrt(var + eps) + beta
// Decide first (a plan you can print), then apply.
#include <string>
#include <utility>
#include <vector>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

/// (producer, batch_norm) pairs that can fold: the batch norm's input is a
/// conv2d or linear whose output nobody else reads and that is not tapped.
using BnFoldPlan = std::vector<std::pair<std::string, std::string>>;

BnFoldPlan plan_bn_folding(const Graph& g);

/// A new model without the planned batch-norm nodes; readers of a folded
/// batch norm read its producer, which now has a bias. Uses the running
/// statistics, so the result equals `model` in eval mode. Throws
/// ValueError if a planned pair is not foldable or one of its nodes carries a
/// transform, unless `model` runs batch-norm fold simulation
/// (GraphModuleImpl::set_bn_fold_simulation): then its transforms see the
/// folded weights already and move to the folded model (shared, not copied),
/// and the result equals `model` in eval mode with them.
GraphModule apply_bn_folding(GraphModule& model, const BnFoldPlan& plan);

/// plan + apply.
GraphModule fold_batch_norm(GraphModule& model);

}  // namespace nnopt
