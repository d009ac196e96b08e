#pragma once
// Dependency groups: which channels of a Graph must be removed together.
//
// Every channel of every node output (the C of [C, H, W], the F of [F]) is an
// element; ops either create fresh elements (conv2d, linear, input) or pass
// their input's elements on (batch_norm, activations, pools, dropout,
// identity). Coupling rules, after DepGraph (Fang et al. 2023):
//   * add ties channel c of every operand (residual branches prune together);
//   * concat along dim 1 lays its inputs' channels side by side (offsets);
//   * a depthwise conv (groups == in == out) passes its input channels on, so
//     its input and output channel c are one element;
//   * flatten of [C, H, W] turns channel c into the H*W features
//     c*H*W .. (c+1)*H*W - 1, which a following linear reads as input features;
//   * a group that is a residual branch's inner width may lose all its
//     channels: the branch goes and its add passes the shortcut on (block /
//     depth pruning, which also removes the branch's per-call kernel costs);
//   * the channels of the input node, of the output node, and of anything
//     the rules cannot prune (grouped non-depthwise convs, linear on rank > 1
//     inputs, concat along other dims ties inputs channel-wise) are locked.
// Tied elements are merged with union-find. Each class that is not locked is
// one prunable unit ("channel"); the slices of parameters that belong to it
// are listed (conv/linear output rows, conv/linear input columns, batch-norm
// entries). Units that share a node output belong to one DependencyGroup
// (a ResNet stage: all convs feeding its adds, their BNs, and every consumer).
//
// Example:
//   nnopt::DependencyGraph deps(model->graph());
//   for (const auto& g : deps.groups()) std::cout << g.name << " " << g.size() << "\n";
//   std::cout << deps.to_string();
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "nnopt/ir/graph.h"

namespace nnopt {

/// Which part of a node a channel slice is.
enum class SliceRole : int {
  kOut = 0,  ///< conv2d / linear output channel: weight[i] (+ bias[i]); also a depthwise conv's channel
  kIn,       ///< conv2d (groups == 1) / linear input channel or feature: weight[:, i]
  kBn,       ///< batch_norm channel: weight[i], bias[i], running_mean[i], running_var[i]
};
const char* slice_role_name(SliceRole r);

/// One slice of one node's parameters.
struct ChannelSlice {
  std::string node;
  SliceRole role = SliceRole::kOut;
  int64_t index = 0;
};

/// A prunable channel: every parameter slice that goes when it goes.
struct PruneUnit {
  std::vector<ChannelSlice> slices;
};

/// Channels coupled through shared node outputs.
struct DependencyGroup {
  std::string name;                    ///< the first node (graph order) with an output slice in the group
  std::vector<PruneUnit> units;        ///< the group's channels, in order of first appearance
  std::vector<std::string> producers;  ///< conv2d/linear nodes (not depthwise) whose outputs are units
  std::vector<std::string> nodes;      ///< every node with a slice in the group, graph order
  /// Node outputs that carry the group's channels, each with its channel -> unit
  /// index map (-1 where a channel belongs elsewhere, e.g. the other half of a concat).
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;
  /// If the group is the inner width of a residual branch (its channels run
  /// from the branch's first conv to one conv whose output, through batch
  /// norms only, is one operand of a two-operand add), the nodes that go
  /// when all its channels go: the whole branch. The add then passes its
  /// other operand on (it becomes an identity). Empty for other groups,
  /// which must keep at least one channel.
  std::vector<std::string> branch_nodes;
  std::string branch_join;  ///< that add
  int64_t size() const { return static_cast<int64_t>(units.size()); }
  bool removable() const { return !branch_nodes.empty(); }
};

class DependencyGraph {
 public:
  /// Analyses `graph` (validated first). Throws GraphError for an op it does not know.
  explicit DependencyGraph(const Graph& graph);

  const Graph& graph() const { return graph_; }
  const std::vector<DependencyGroup>& groups() const { return groups_; }
  /// Index of the group named `name`; throws ValueError listing the names.
  size_t group_index(const std::string& name) const;
  const DependencyGroup& group(const std::string& name) const { return groups_[group_index(name)]; }
  /// Total number of prunable units.
  int64_t num_units() const;
  /// One line per group: name, channels, producers, member count.
  std::string to_string() const;

 private:
  void find_branch(DependencyGroup& g) const;

  Graph graph_;
  std::vector<DependencyGroup> groups_;
};

}  // namespace nnopt
