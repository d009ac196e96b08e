// ABC channel-number structure search (prune/structure_search.h) with a
// synthetic fitness whose optimum is known.
#include <gtest/gtest.h>

#include "nnopt/core/error.h"
#include "nnopt/models/zoo.h"
#include "nnopt/prune/criterion.h"
#include "nnopt/prune/structure_search.h"
#include "test_util.h"

using namespace nnopt;

TEST(PruneSearch, BeeColonyApproachesAKnownOptimumWithinTheMacBudget) {
  torch::manual_seed(0);
  GraphModule m(build_model("resnet20"));
  DependencyGraph deps(m->graph());
  auto scores = make_importance("l1")->score(m, deps, {});
  // Optimum: keep half of every group (level 5 of 10) — within a 0.5 MAC budget.
  const Structure want(deps.groups().size(), 5);
  auto want_plan = plan_for_structure(deps, scores, want, 10);
  auto fitness = [&](const ChannelPlan& p) {
    double d = 0;
    for (const auto& g : deps.groups()) {
      auto it = p.remove.find(g.name);
      int64_t kept = g.size() - (it == p.remove.end() ? 0 : static_cast<int64_t>(it->second.size()));
      d += std::abs(static_cast<double>(kept) / g.size() - 0.5);
    }
    return -d;
  };
  auto opt = StructureSearchOptions().colony(10).cycles(15).max_macs_ratio(0.5).seed(3);
  auto r = abc_structure_search(deps, scores, fitness, opt);
  EXPECT_LE(r.best_macs_ratio, 0.5);
  EXPECT_EQ(r.best_per_cycle.size(), 16u);
  for (size_t i = 1; i < r.best_per_cycle.size(); ++i) EXPECT_GE(r.best_per_cycle[i], r.best_per_cycle[i - 1]);
  EXPECT_GT(r.best_per_cycle.back(), r.best_per_cycle.front());
  EXPECT_GT(r.best_fitness, -0.25 * deps.groups().size() / 2);  // much closer than random levels
  EXPECT_GT(r.evaluations, 10 * 15);
  EXPECT_THROW_MSG(abc_structure_search(deps, scores, fitness, StructureSearchOptions().max_macs_ratio(0.001)),
                   ValueError, "is below the smallest structure's");
  EXPECT_THROW_MSG(StructureSearchOptions().colony(1).validate(), ValueError, "colony must be >= 2");
}

namespace {
// One group "a" of 10 channels (conv a -> conv b).
Graph ten_channel_group() {
  Graph g;
  g.input("input", {1, 4, 4});
  g.conv2d("a", "input", 10, 1);
  g.conv2d("b", "a", 3, 1);
  return g;
}
}  // namespace

TEST(PruneSearch, StructureKeepsTheHighestScoringChannels) {
  const Graph g = ten_channel_group();
  DependencyGraph deps(g);
  std::vector<torch::Tensor> scores = {torch::arange(10, 0, -1, torch::kDouble)};  // channel 0 best
  auto p = plan_for_structure(deps, scores, {3}, 10);  // keep 3 of 10
  EXPECT_EQ(p.remove.at("a"), (std::vector<int64_t>{3, 4, 5, 6, 7, 8, 9}));
  EXPECT_TRUE(plan_for_structure(deps, scores, {10}, 10).remove.empty());
  EXPECT_THROW_MSG(plan_for_structure(deps, scores, {11}, 10), ValueError, "outside 0..10");
}

// Channel counts given by name (nnopt prune --keep): the same choice of
// channels as a structure, and errors that name the group.
TEST(PruneSearch, ChannelCountsKeepTheHighestScoringChannels) {
  const Graph g = ten_channel_group();
  DependencyGraph deps(g);
  std::vector<torch::Tensor> scores = {torch::tensor({5., 9., 1., 7., 3., 8., 2., 6., 4., 0.}, torch::kDouble)};
  EXPECT_EQ(plan_keeping(deps, scores, {{"a", 3}}).remove.at("a"),
            (std::vector<int64_t>{0, 2, 4, 6, 7, 8, 9}));  // keeps the scores 9, 8, 7
  EXPECT_TRUE(plan_keeping(deps, scores, {}).remove.empty());
  EXPECT_TRUE(plan_keeping(deps, scores, {{"a", 10}}).remove.empty());
  EXPECT_THROW_MSG(plan_keeping(deps, scores, {{"zz", 3}}), ValueError, "no dependency group named 'zz' (groups: a)");
  EXPECT_THROW_MSG(plan_keeping(deps, scores, {{"a", 11}}), ValueError, "group 'a' has 10 channels, cannot keep 11");
  EXPECT_THROW_MSG(plan_keeping(deps, scores, {{"a", 0}}), ValueError, "group 'a' cannot keep 0 channels");
  // On resnet20 a branch may go: the block's convs leave the graph.
  torch::manual_seed(0);
  GraphModule m(build_model("resnet20"));
  DependencyGraph rd(m->graph());
  auto rs = make_importance("l1")->score(m, rd, {});
  Graph small = prune_graph(rd, plan_keeping(rd, rs, {{"layer1.1.conv1", 0}, {"layer2.0.conv2", 24}}));
  EXPECT_FALSE(small.contains("layer1.1.conv1"));
  EXPECT_TRUE(small.contains("layer1.2.conv1"));
  EXPECT_EQ(small.node("layer2.0.conv2").shape[0], 24);
}

// Random structures (initial colony, scouts) are filled up to the budget: with
// a fitness that never prefers anything, the first source stays best, and no
// group of it can be raised one level without breaking the budget.
TEST(PruneSearch, RandomStructuresUseTheMacBudget) {
  torch::manual_seed(0);
  GraphModule m(build_model("resnet20"));
  DependencyGraph deps(m->graph());
  auto scores = make_importance("l1")->score(m, deps, {});
  const double base = static_cast<double>(m->graph().macs());
  auto ratio = [&](const Structure& s) {
    return static_cast<double>(prune_graph(deps, plan_for_structure(deps, scores, s, 10)).macs()) / base;
  };
  auto r = abc_structure_search(deps, scores, [](const ChannelPlan&) { return 0.0; },
                                StructureSearchOptions().colony(3).cycles(0).max_macs_ratio(0.5).seed(7));
  EXPECT_LE(r.best_macs_ratio, 0.5);
  EXPECT_GT(r.best_macs_ratio, 0.4);
  for (size_t g = 0; g < r.best.size(); ++g) {
    if (r.best[g] == 10) continue;
    Structure up = r.best;
    up[g] += 1;
    EXPECT_GT(ratio(up), 0.5) << "group " << g << " could still be raised";
  }
}

// Extra budgets (e.g. predicted latency): no candidate the colony evaluates
// breaks one, random structures fill up to it, the result reports its value,
// and a budget below the smallest structure is refused.
TEST(PruneSearch, ExtraBudgetsHoldForEveryCandidate) {
  torch::manual_seed(0);
  GraphModule m(build_model("resnet20"));
  DependencyGraph deps(m->graph());
  auto scores = make_importance("l1")->score(m, deps, {});
  int64_t total = 0;
  for (const auto& g : deps.groups()) total += g.size();
  // Budget: at most 40 % of all channels kept (a stand-in for a latency model).
  auto kept_fraction = [&](const ChannelPlan& p) {
    int64_t removed = 0;
    for (const auto& [name, v] : p.remove) removed += static_cast<int64_t>(v.size());
    return static_cast<double>(total - removed) / static_cast<double>(total);
  };
  std::vector<StructureBudget> budgets{{"kept channels", kept_fraction, 0.4}};
  double worst = 0;
  int64_t evaluated = 0;
  auto fitness = [&](const ChannelPlan& p) {
    worst = std::max(worst, kept_fraction(p));
    ++evaluated;
    return -std::abs(kept_fraction(p) - 0.3);
  };
  auto r = abc_structure_search(deps, scores, fitness,
                                StructureSearchOptions().colony(4).cycles(3).max_macs_ratio(1.0).seed(5), budgets);
  EXPECT_EQ(evaluated, r.evaluations);
  EXPECT_LE(worst, 0.4);
  ASSERT_EQ(r.budget_values.size(), 1u);
  EXPECT_EQ(r.budget_values[0], kept_fraction(r.best_plan));
  EXPECT_LE(r.budget_values[0], 0.4);
  // Filled: with the MAC budget off, raising any group of a random source breaks the channel budget.
  auto filled = abc_structure_search(deps, scores, [](const ChannelPlan&) { return 0.0; },
                                     StructureSearchOptions().colony(2).cycles(0).max_macs_ratio(1.0).seed(1),
                                     budgets);
  for (size_t g = 0; g < filled.best.size(); ++g) {
    if (filled.best[g] == 10) continue;
    Structure up = filled.best;
    up[g] += 1;
    EXPECT_GT(kept_fraction(plan_for_structure(deps, scores, up, 10)), 0.4) << "group " << g;
  }
  std::vector<StructureBudget> impossible{{"kept channels", kept_fraction, 0.01}};
  EXPECT_THROW_MSG(abc_structure_search(deps, scores, fitness, StructureSearchOptions(), impossible), ValueError,
                   "kept channels budget 0.01 is below the smallest structure's");
}

TEST(PruneSearch, BlockPruningDropsBranchesOnlyWhenAllowed) {
  torch::manual_seed(0);
  GraphModule m(build_model("resnet20"));
  DependencyGraph deps(m->graph());
  auto scores = make_importance("l1")->score(m, deps, {});
  // Fitness rewards emptied branches and, beyond that, wide stages: the best
  // structures drop blocks to spend the MACs on the rest.
  auto emptied = [&](const ChannelPlan& p) {
    int64_t n = 0;
    for (const auto& g : deps.groups()) {
      auto it = p.remove.find(g.name);
      if (it != p.remove.end() && static_cast<int64_t>(it->second.size()) == g.size()) ++n;
    }
    return n;
  };
  int64_t worst_plan_errors = 0;
  auto fitness = [&](const ChannelPlan& p) {
    try {
      (void)prune_graph(deps, p);  // every candidate is a valid plan
    } catch (const ValueError&) {
      ++worst_plan_errors;
    }
    return static_cast<double>(emptied(p)) - 0.001 * static_cast<double>(p.count());
  };
  auto opt = StructureSearchOptions().colony(8).cycles(20).max_macs_ratio(0.6).seed(1);
  auto plain = abc_structure_search(deps, scores, fitness, opt);
  EXPECT_EQ(emptied(plain.best_plan), 0);
  auto blocks = abc_structure_search(deps, scores, fitness, opt.remove_blocks(true));
  EXPECT_EQ(worst_plan_errors, 0);
  EXPECT_GE(emptied(blocks.best_plan), 3);
  EXPECT_LE(blocks.best_macs_ratio, 0.6);
  for (const auto& g : deps.groups()) {  // only branch groups were emptied
    auto it = blocks.best_plan.remove.find(g.name);
    if (it != blocks.best_plan.remove.end() && static_cast<int64_t>(it->second.size()) == g.size())
      EXPECT_TRUE(g.removable()) << g.name;
  }
  GraphModule small = prune_channels(m, deps, blocks.best_plan);
  EXPECT_LT(small->graph().size(), m->graph().size());
  // Level 0 is refused for a group that is not a branch's inner width.
  Structure s(deps.groups().size(), 5);
  s[0] = 0;  // "conv1": the first stage
  EXPECT_THROW_MSG(plan_for_structure(deps, scores, s, 10), ValueError,
                   "level 0 of group 'conv1': only a residual branch's inner width can go to zero");
}
