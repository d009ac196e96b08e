#pragma once
// Channel surgery: remove channels of dependency groups from every member
// (conv2d / linear output rows and input columns, depthwise filters, batch-norm
// entries, the features a flatten makes of them) and get a valid, smaller
// Graph + GraphModule with the remaining weights.
//
// A ChannelPlan is the decision (group name -> unit indices to remove); it is
// printable and round-trips through JSON, so a plan can be saved and replayed
// on the same graph. zero_channels() applies the same plan as a mask (the
// channels' producers and batch norms output exactly 0); in eval mode the
// physically pruned model computes what the masked model computes.
//
// Example:
//   nnopt::DependencyGraph deps(model->graph());
//   nnopt::ChannelPlan plan;
//   plan.remove["layer1.0.conv1"] = {0, 3, 5};
//   nnopt::GraphModule small = nnopt::prune_channels(model, deps, plan);
#include <map>
#include <string>
#include <vector>

#include "nnopt/nn/graph_module.h"
#include "nnopt/prune/dependency.h"

namespace nnopt {

/// Which channels to remove: group name -> sorted unit indices within the group.
struct ChannelPlan {
  std::map<std::string, std::vector<int64_t>> remove;
  /// Number of units removed.
  int64_t count() const;
  std::string to_json() const;
  /// Throws ValueError on malformed JSON.
  static ChannelPlan from_json(const std::string& text);
};

/// Checks the plan against `deps`: known groups, indices in range and unique,
/// at least one channel left in every node that stays. A removable group
/// (DependencyGroup::removable) may lose all its channels: its residual branch
/// goes and the add it joined becomes an identity on the other operand.
/// Throws ValueError naming the group or node.
void check_plan(const DependencyGraph& deps, const ChannelPlan& plan);

/// The graph after the removal (attributes changed, shapes re-inferred); no
/// weights. Cheap: the planners call it to count parameters and MACs.
Graph prune_graph(const DependencyGraph& deps, const ChannelPlan& plan);

/// Physically removes the planned channels: a new GraphModule (same training
/// flag) holding the remaining weights and batch-norm statistics. `model` is
/// unchanged. The model's graph must be the one `deps` was built from, and no
/// node may carry a weight or activation transform (ValueError naming it:
/// remove quantizers or masks first).
GraphModule prune_channels(GraphModule& model, const DependencyGraph& deps, const ChannelPlan& plan);

/// Masks the planned channels in place: zeroes the producers' output rows
/// (weight and bias), depthwise filters, and batch-norm weight, bias and
/// running mean of each removed unit, so that every tensor carrying the unit
/// is 0 on that channel; an emptied branch's nodes are zeroed whole, so the
/// branch adds 0.
void zero_channels(GraphModule& model, const DependencyGraph& deps, const ChannelPlan& plan);

}  // namespace nnopt
