#pragma once
// Pruning targets and the channel planner that meets them.
//
// A target is a sparsity (fraction of channels, or of weights for
// unstructured pruning), a parameter or MAC reduction (fraction removed), or a
// latency budget (milliseconds per forward pass at a batch size, measured on
// the physically pruned model).
//
// The planner ranks channels by importance and removes them either globally
// (one threshold over all groups, each group's scores divided by their mean so
// that layers of different scale compare) or per layer (the same fraction of
// every group). One scalar level in [0, 1] moves the cut from nothing to every
// group at max_group_ratio; solve_channel_target bisects the level until the
// target is met (MACs and parameters from the pruned graph, latency measured).
//
// Example:
//   auto target = nnopt::PruneTarget::parse("macs=0.5");
//   auto sol = nnopt::solve_channel_target(deps, scores, target, nnopt::ChannelPlannerOptions());
//   GraphModule small = nnopt::prune_channels(model, deps, sol.plan);
#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nnopt/prune/dependency.h"
#include "nnopt/prune/surgery.h"

namespace nnopt {

enum class TargetKind : int { kSparsity = 0, kParams, kMacs, kLatency };
const char* target_kind_name(TargetKind k);

struct PruneTarget {
  TargetKind kind = TargetKind::kMacs;
  /// sparsity / params / macs: the fraction removed, in [0, 1); latency: ms (> 0).
  double value = 0.5;
  /// Parses "macs=0.5", "params=0.3", "sparsity=0.9", "latency=1.5"; ValueError naming the text.
  static PruneTarget parse(const std::string& text);
  std::string to_string() const;
  /// ValueError: "target sparsity=1 must be in [0, 1) ...", "target latency=-1 must be > 0 ms".
  void validate() const;
};

struct ChannelPlannerOptions {
  /// Rank channels across all groups (true, default) or cut the same fraction of every group.
  TORCH_ARG(bool, global) = true;
  /// At most this fraction of any group's channels is removed; default 0.9 (in (0, 1)).
  TORCH_ARG(double, max_group_ratio) = 0.9;
  /// Kept channels per group are rounded up to a multiple of this (vector
  /// units of the convolution kernels like multiples of 8); default 1.
  TORCH_ARG(int64_t, channel_multiple) = 1;
  /// latency targets: batch size of the timed forward pass; default 1.
  TORCH_ARG(int64_t, latency_batch) = 1;
  /// latency targets: timed runs per measurement (median); default 20.
  TORCH_ARG(int64_t, latency_repeats) = 20;

 public:
  /// ValueError naming the option and its value.
  void validate() const;
};

/// The plan at ranking `level` in [0, 1] for `scores` (one tensor per group,
/// as Importance::score returns). Units with +inf scores are never removed.
ChannelPlan plan_at_level(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                          double level, const ChannelPlannerOptions& opt);

/// The plan's value of the target's metric: the fraction of channels,
/// parameters or MACs removed, or the measured latency in ms.
double plan_metric(const DependencyGraph& deps, const ChannelPlan& plan, TargetKind kind,
                   const ChannelPlannerOptions& opt);

struct ChannelSolution {
  ChannelPlan plan;
  double level = 0;     ///< ranking level that gives the plan
  double achieved = 0;  ///< plan_metric of the plan
};

/// The smallest level whose plan meets `target` (removes at least the
/// fraction, or runs within the budget). ValueError when the target is out of
/// reach: "target macs=0.97 is out of reach: at most 0.91 with max_group_ratio
/// 0.9", "latency budget 0.1 ms at batch 1 is below the minimum 0.52 ms ...".
ChannelSolution solve_channel_target(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                                     const PruneTarget& target, const ChannelPlannerOptions& opt);

}  // namespace nnopt
