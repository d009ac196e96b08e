#pragma once
// Channel-number structure search with an artificial bee colony, after
// ABCPruner (Lin et al. 2020, "Channel Pruning via Automatic Structure
// Search"): the per-group channel counts matter more than which channels are
// kept, so search the counts and keep, in each group, the highest-scoring
// pretrained channels (e.g. by L1).
//
// A structure gives each dependency group a level k in 1..levels; the group
// keeps ceil(k / levels * size) channels. With remove_blocks, a residual
// branch's inner group may take level 0: the whole branch goes (block
// pruning), which also saves the per-call cost of its convs — at batch 1 that
// cost, not the MACs, is most of a thin conv's time. Structures over the MAC budget are
// repaired by lowering random groups one level at a time; random structures
// (the initial colony and the scouts) are then filled back up, raising random
// groups while the budget allows, so that they use the budget (a dropped
// branch, level 0, stays dropped). The colony
// (Karaboga 2005): `colony` food sources; each cycle an employed-bee phase
// (every source tries a neighbour), an onlooker phase (sources chosen with
// probability proportional to fitness try neighbours), and a scout phase
// (a source not improved for `limit` tries is replaced by a random one). A
// neighbour moves `mutations` random groups: k' = round(k + phi (k - k_other)),
// phi ~ U(-1, 1), k_other from another source, then at least +-1 if unchanged.
// Fitness is the caller's (ABCPruner: accuracy after a short fine-tune of the
// pruned model that starts from the pretrained filters); higher is better.
//
// Besides the MAC budget, the caller may add budgets of its own
// (StructureBudget: a value of the plan and its maximum), e.g. the predicted
// latency at batch 1 and at batch 64 from a ConvLatencyTable
// (prune/latency_table.h). Repair and fill then keep every budget, so the
// colony searches only structures that are both small and fast.
//
// Example:
//   auto r = nnopt::abc_structure_search(deps, scores, fitness,
//                                        nnopt::StructureSearchOptions().max_macs_ratio(0.5));
//   GraphModule small = nnopt::prune_channels(model, deps, r.best_plan);
#include <torch/arg.h>

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "nnopt/prune/surgery.h"

namespace nnopt {

struct StructureSearchOptions {
  /// Food sources (candidate structures); default 8.
  TORCH_ARG(int64_t, colony) = 8;
  /// Search cycles; default 5.
  TORCH_ARG(int64_t, cycles) = 5;
  /// Tries without improvement before a scout replaces a source; default 3.
  TORCH_ARG(int64_t, limit) = 3;
  /// Channel-count levels per group (k / levels of the channels kept); default 10.
  TORCH_ARG(int64_t, levels) = 10;
  /// Groups changed per neighbour; default 2.
  TORCH_ARG(int64_t, mutations) = 2;
  /// MAC budget as a fraction of the unpruned model, in (0, 1]; default 0.5.
  TORCH_ARG(double, max_macs_ratio) = 0.5;
  /// Seed of the colony's choices; default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Block pruning: removable groups (a residual branch's inner width,
  /// DependencyGroup::removable) may also take level 0, which removes the
  /// branch; default off.
  TORCH_ARG(bool, remove_blocks) = false;

 public:
  /// ValueError naming the bad option and its value.
  void validate() const;
};

/// A structure: one level in 1..levels per group of the DependencyGraph.
using Structure = std::vector<int64_t>;

/// The plan that keeps, in each group, ceil(level / levels * size) channels with the highest scores.
ChannelPlan plan_for_structure(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                               const Structure& s, int64_t levels);

/// The plan that keeps keep[name] channels (the highest-scoring) of each named
/// group; groups not named keep all theirs. 0 removes a residual branch
/// (DependencyGroup::removable). ValueError naming an unknown group (and
/// listing the model's groups) or a count outside 0..size.
ChannelPlan plan_keeping(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                         const std::map<std::string, int64_t>& keep);

/// "layer1.1.conv1=0,layer2.0.conv2=24" -> {group: count} (nnopt prune --keep).
/// ValueError naming the item that is not GROUP=COUNT with a count >= 0, or
/// a group named twice.
std::map<std::string, int64_t> parse_channel_counts(const std::string& spec);

struct StructureSearchResult {
  Structure best;
  ChannelPlan best_plan;
  double best_fitness = 0;
  double best_macs_ratio = 0;           ///< MACs of the best structure / MACs of the model
  std::vector<double> best_per_cycle;   ///< best fitness after the initial colony and each cycle
  int64_t evaluations = 0;              ///< calls of the fitness function
  std::vector<double> budget_values;    ///< the best structure's value of each extra budget
};

/// Fitness of a candidate: gets its plan (relative to deps.graph()).
using StructureFitness = std::function<double(const ChannelPlan&)>;

/// A budget besides the MACs: a structure fits when value(plan) <= max.
struct StructureBudget {
  std::string name;  ///< named in errors and results, e.g. "latency b64 (ms)"
  std::function<double(const ChannelPlan&)> value;
  double max = 0;
};

/// Runs the colony. ValueError if even the smallest structure (level 1
/// everywhere) exceeds the MAC budget or one of `budgets`;
/// result.budget_values holds the best structure's value of each budget.
StructureSearchResult abc_structure_search(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                                           const StructureFitness& fitness, const StructureSearchOptions& opt,
                                           const std::vector<StructureBudget>& budgets = {});

}  // namespace nnopt
