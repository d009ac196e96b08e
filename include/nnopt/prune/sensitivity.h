#pragma once
// Sensitivity analysis for channel pruning: prune one dependency group at a
// time by each of a few ratios (lowest-importance channels first), measure the
// accuracy of the physically pruned model on held-out data (no fine-tuning),
// and turn the curves into per-group ratios: the largest tested ratio whose
// accuracy drop stays within a tolerance (Li et al. 2017, "Pruning Filters
// for Efficient ConvNets", Sec. 4.1).
//
// Example:
//   auto rows = nnopt::channel_sensitivity(model, deps, scores, val, {0.25, 0.5, 0.75});
//   auto ratios = nnopt::ratios_from_sensitivity(rows, /*max_drop=*/0.01);
//   auto plan = nnopt::plan_from_ratios(deps, scores, ratios, nnopt::ChannelPlannerOptions());
#include <map>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/prune/target.h"

namespace nnopt {

struct SensitivityRow {
  std::string group;
  double ratio = 0;      ///< fraction of the group's channels removed (0 = the unpruned baseline)
  int64_t removed = 0;   ///< channels removed
  double accuracy = 0;   ///< top-1 on the data, eval mode
  double macs_removed = 0;  ///< fraction of the model's MACs removed
};

/// One row per (group, ratio), plus a baseline row (group "", ratio 0). Ratios
/// must lie in (0, 1); at least one channel of a group is always kept.
/// ValueError for empty ratios or data.
std::vector<SensitivityRow> channel_sensitivity(GraphModule& model, const DependencyGraph& deps,
                                                const std::vector<torch::Tensor>& scores, const Dataset& data,
                                                const std::vector<double>& ratios, int64_t batch_size = 500);

/// group -> the largest ratio whose accuracy is within max_drop (a fraction,
/// 0.01 = 1 point) of the baseline row; 0 when none is.
std::map<std::string, double> ratios_from_sensitivity(const std::vector<SensitivityRow>& rows, double max_drop);

/// The plan removing, in each group, floor(ratio * size) lowest-scored channels
/// (capped and rounded as plan_at_level does). ValueError for an unknown group
/// or a ratio outside [0, 1).
ChannelPlan plan_from_ratios(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                             const std::map<std::string, double>& ratios, const ChannelPlannerOptions& opt);

}  // namespace nnopt
