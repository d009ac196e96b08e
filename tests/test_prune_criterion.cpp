// Importance criteria on hand-made weights with a known ranking, and the
// channel planner's targets (prune/criterion.h, prune/target.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/models/zoo.h"
#include "nnopt/prune/criterion.h"
#include "nnopt/prune/sensitivity.h"
#include "nnopt/prune/target.h"
#include "nnopt/train/trainer.h"
#include "test_util.h"

using namespace nnopt;

namespace {

// input [2, 4, 4] -> a (1x1, 4 filters) -> bn -> relu -> b (1x1, 3) -> pool -> flatten -> fc 2
Graph tiny_graph() {
  Graph g;
  g.input("input", {2, 4, 4});
  g.conv2d("a", "input", 4, 1);
  g.batch_norm("bn", "a");
  g.unary("relu", OpKind::kReLU, "bn");
  g.conv2d("b", "relu", 3, 1);
  g.add("pool", OpKind::kGlobalAvgPool, NoAttrs{}, {"b"});
  g.flatten("flat", "pool");
  g.linear("fc", "flat", 2);
  return g;
}

// Sets a's four 2-vector filters; BN is the identity in eval mode.
GraphModule tiny_model(const std::vector<std::array<float, 2>>& filters) {
  torch::manual_seed(0);
  GraphModule m(tiny_graph());
  torch::NoGradGuard ng;
  auto& a = m->node_module("a");
  for (size_t i = 0; i < filters.size(); ++i) {
    a.weight[i][0][0][0] = filters[i][0];
    a.weight[i][1][0][0] = filters[i][1];
  }
  auto& bn = m->node_module("bn");
  bn.running_var.fill_(1.0 - 1e-5);
  m->eval();
  return m;
}

// Indices sorted by ascending score.
std::vector<int64_t> ranking(const torch::Tensor& s) {
  auto a = s.contiguous();
  std::vector<int64_t> idx(a.numel());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = static_cast<int64_t>(i);
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t x, int64_t y) {
    return a[x].item<double>() < a[y].item<double>();
  });
  return idx;
}

std::vector<torch::Tensor> score(const std::string& name, GraphModule& m, const ImportanceData& d = {},
                                 uint64_t seed = 0) {
  DependencyGraph deps(m->graph());
  return make_importance(name, ImportanceOptions().seed(seed))->score(m, deps, d);
}

}  // namespace

TEST(PruneCriterion, L1AndL2RankFiltersByTheirNorms) {
  // l1: 2, 1.8, 6, 1      l2: 1.41, 1.8, 4.24, 0.71
  GraphModule m = tiny_model({{{1, 1}}, {{1.8f, 0}}, {{3, 3}}, {{0.5f, 0.5f}}});
  auto l1 = score("l1", m)[0], l2 = score("l2", m)[0];
  EXPECT_EQ(ranking(l1), (std::vector<int64_t>{3, 1, 0, 2}));
  EXPECT_EQ(ranking(l2), (std::vector<int64_t>{3, 0, 1, 2}));
  EXPECT_NEAR(l1[0].item<double>(), 2.0, 1e-6);
  EXPECT_NEAR(l2[2].item<double>(), std::sqrt(18.0), 1e-6);
}

TEST(PruneCriterion, FpgmPrunesFiltersNearTheGeometricMedianNotTheSmallest) {
  // (5,0) (-5,0) (0,5) (0,6): filters 2 and 3 are close to each other and to the
  // median; distance sums 24.88, 24.88, 15.14, 16.62. Filter 3 has the largest norm.
  GraphModule m = tiny_model({{{5, 0}}, {{-5, 0}}, {{0, 5}}, {{0, 6}}});
  auto s = score("fpgm", m)[0];
  auto r = ranking(s);
  EXPECT_EQ(r[0], 2);
  EXPECT_EQ(r[1], 3);
  EXPECT_NEAR(s[2].item<double>(), 10 * std::sqrt(2.0) + 1, 1e-6);
  EXPECT_EQ(ranking(score("l2", m)[0]).back(), 3);  // the norm would keep filter 3 first
}

TEST(PruneCriterion, BnScaleRanksByAbsoluteGammaAndNeedsBatchNorm) {
  GraphModule m = tiny_model({{{1, 1}}, {{1, 1}}, {{1, 1}}, {{1, 1}}});
  {
    torch::NoGradGuard ng;
    m->node_module("bn").weight.copy_(torch::tensor({0.5f, -2.0f, 0.1f, 1.0f}));
  }
  auto s = score("bn", m);
  EXPECT_EQ(ranking(s[0]), (std::vector<int64_t>{2, 0, 3, 1}));
  EXPECT_TRUE(std::isinf(s[1][0].item<double>()));  // group b has no batch norm: never pruned
  GraphModule lenet(build_model("lenet5"));
  EXPECT_THROW_MSG(score("bn", lenet), ValueError, "criterion 'bn' needs batch_norm");
}

TEST(PruneCriterion, TaylorScoresAChannelWithoutPathToTheLossZero) {
  GraphModule m = tiny_model({{{1, 0.5f}}, {{2, -1}}, {{0.5f, 1}}, {{1, 1}}});
  {
    torch::NoGradGuard ng;
    m->node_module("b").weight.select(1, 1).zero_();  // channel 1 reaches nothing
    m->node_module("bn").bias.fill_(0.3f);
  }
  torch::manual_seed(3);
  ImportanceData d;
  d.inputs = {torch::randn({8, 2, 4, 4}), torch::randn({8, 2, 4, 4})};
  d.labels = {torch::randint(0, 2, {8}, torch::kLong), torch::randint(0, 2, {8}, torch::kLong)};
  auto s = score("taylor", m, d)[0];
  EXPECT_EQ(s[1].item<double>(), 0.0);
  for (int i : {0, 2, 3}) EXPECT_GT(s[i].item<double>(), 0.0);
  // The paper's formula for channel 0, computed directly: (sum of grad * weight)^2 per batch.
  double want = 0;
  for (size_t b = 0; b < 2; ++b) {
    auto loss = torch::nn::functional::cross_entropy(m->forward(d.inputs[b]), d.labels[b]);
    auto& a = m->node_module("a");
    auto& bn = m->node_module("bn");
    auto g = torch::autograd::grad({loss}, {a.weight, bn.weight, bn.bias});  // a has no bias
    double sum = (g[0][0] * a.weight[0]).sum().item<double>() + (g[1][0] * bn.weight[0]).item<double>() +
                 (g[2][0] * bn.bias[0]).item<double>();
    want += sum * sum / 2;
  }
  EXPECT_NEAR(s[0].item<double>(), want, 1e-9 + 1e-6 * want);
  EXPECT_THROW_MSG(score("taylor", m), ValueError, "criterion 'taylor' needs data");
}

TEST(PruneCriterion, HRankScoresTheRankOfFeatureMaps) {
  // Channel 0 of the input is generic (rank 4), channel 1 is an outer product
  // (rank 1), both positive so that relu keeps them. Filters pick:
  // a0 = ch0 (rank 4), a1 = ch1 (rank 1), a2 = 0 (rank 0), a3 = ch0 + ch1 (rank 4).
  GraphModule m = tiny_model({{{1, 0}}, {{0, 1}}, {{0, 0}}, {{1, 1}}});
  torch::manual_seed(4);
  auto x = torch::empty({6, 2, 4, 4});
  x.select(1, 0).copy_(torch::rand({6, 4, 4}) + 0.1);
  auto u = torch::rand({6, 4, 1}) + 0.1, v = torch::rand({6, 1, 4}) + 0.1;
  x.select(1, 1).copy_(u * v);
  ImportanceData d;
  d.inputs = {x};
  d.labels = {torch::zeros({6}, torch::kLong)};
  auto s = score("hrank", m, d)[0];
  EXPECT_DOUBLE_EQ(s[0].item<double>(), 4.0);
  EXPECT_DOUBLE_EQ(s[1].item<double>(), 1.0);
  EXPECT_DOUBLE_EQ(s[2].item<double>(), 0.0);
  EXPECT_DOUBLE_EQ(s[3].item<double>(), 4.0);
}

TEST(PruneCriterion, GroupScoreIsTheMeanOverResidualProducers) {
  Graph g;
  g.input("input", {2, 4, 4});
  g.conv2d("p", "input", 3, 1);
  g.conv2d("q", "input", 3, 1);
  g.add_op("add", {"p", "q"});
  g.conv2d("c", "add", 2, 1);
  torch::manual_seed(1);
  GraphModule m(g);
  DependencyGraph deps(g);
  auto s = make_importance("l1")->score(m, deps, {});
  const auto& grp = deps.group("p");
  ASSERT_EQ(grp.producers, (std::vector<std::string>{"p", "q"}));
  auto lp = m->node_module("p").weight.abs().flatten(1).sum(1);
  auto lq = m->node_module("q").weight.abs().flatten(1).sum(1);
  EXPECT_TRUE(torch::allclose(s[deps.group_index("p")].to(torch::kFloat), (lp + lq) / 2));
}

TEST(PruneCriterion, RandomIsSeededAndUnknownNamesAreListed) {
  GraphModule m(build_model("lenet5"));
  auto a = score("random", m, {}, 5), b = score("random", m, {}, 5), c = score("random", m, {}, 6);
  EXPECT_TRUE(torch::equal(a[1], b[1]));
  EXPECT_FALSE(torch::equal(a[1], c[1]));
  EXPECT_TRUE((a[1] >= 0).all().item<bool>() && (a[1] < 1).all().item<bool>());
  EXPECT_THROW_MSG(make_importance("l3"), ValueError, "unknown pruning criterion 'l3' (known: l1, l2, fpgm");
  EXPECT_THROW_MSG(register_importance("l1", [](const ImportanceOptions& o) {
                     return std::make_shared<L1Importance>(o);
                   }),
                   ValueError, "already registered");
}

TEST(PrunePlanner, PerLayerCutsTheSameFractionOfEveryGroup) {
  GraphModule m(build_model("resnet20"));
  DependencyGraph deps(m->graph());
  auto s = make_importance("l1")->score(m, deps, {});
  auto plan = plan_at_level(deps, s, 1.0, ChannelPlannerOptions().global(false).max_group_ratio(0.5));
  for (const auto& g : deps.groups()) {
    ASSERT_EQ(plan.remove.count(g.name), 1u) << g.name;
    EXPECT_EQ(static_cast<int64_t>(plan.remove[g.name].size()), g.size() / 2);
    // The removed ones are the group's lowest scores.
    auto gi = deps.group_index(g.name);
    double max_removed = -1, min_kept = 1e300;
    for (int64_t u = 0; u < g.size(); ++u) {
      double v = s[gi][u].item<double>();
      bool removed = std::binary_search(plan.remove[g.name].begin(), plan.remove[g.name].end(), u);
      (removed ? max_removed : min_kept) = removed ? std::max(max_removed, v) : std::min(min_kept, v);
    }
    EXPECT_LE(max_removed, min_kept);
  }
}

TEST(PrunePlanner, MacTargetIsMetWithRoundedChannelCounts) {
  torch::manual_seed(0);
  GraphModule m(build_model("resnet20"));
  DependencyGraph deps(m->graph());
  auto s = make_importance("l2")->score(m, deps, {});
  auto opt = ChannelPlannerOptions().channel_multiple(8);
  auto sol = solve_channel_target(deps, s, PruneTarget::parse("macs=0.5"), opt);
  EXPECT_GE(sol.achieved, 0.5);
  // Overshoot is bounded by one rounding step: with multiples of 8, the next
  // step can drop a whole 8-channel block of a 16-channel layer1 group (the
  // residual stream alone ties 7 convs), up to ~17 % of the MACs. (0.6 here
  // failed once under ctest -j2 at 0.614: near-tied global scores can flip
  // which group loses the next block.)
  EXPECT_LT(sol.achieved, 0.7);
  Graph pg = prune_graph(deps, sol.plan);
  EXPECT_NEAR(1.0 - static_cast<double>(pg.macs()) / m->graph().macs(), sol.achieved, 1e-12);
  for (const auto& n : pg.nodes())
    if (n.op == OpKind::kConv2d) EXPECT_EQ(n.as<Conv2dAttrs>().out_channels % 8, 0) << n.name;
  // Minimal: one level less pruning (the bisection's last miss) is below the target.
  auto less = plan_at_level(deps, s, sol.level * 0.98, opt);
  EXPECT_LT(plan_metric(deps, less, TargetKind::kMacs, opt), 0.5 + 1e-12);
  auto p = solve_channel_target(deps, s, PruneTarget::parse("params=0.3"), ChannelPlannerOptions());
  EXPECT_GE(p.achieved, 0.3);
  EXPECT_LT(p.achieved, 0.33);
}

TEST(PrunePlanner, BadTargetsAreClearErrors) {
  EXPECT_THROW_MSG(PruneTarget::parse("sparsity=1"), ValueError, "must be in [0, 1)");
  EXPECT_THROW_MSG(PruneTarget::parse("sparsity=1.5"), ValueError, "must be in [0, 1)");
  EXPECT_THROW_MSG(PruneTarget::parse("flops=0.5"), ValueError, "unknown kind 'flops'");
  EXPECT_THROW_MSG(PruneTarget::parse("macs"), ValueError, "must be KIND=VALUE");
  EXPECT_THROW_MSG(PruneTarget::parse("macs=half"), ValueError, "is not a number");
  EXPECT_THROW_MSG(PruneTarget::parse("latency=0"), ValueError, "must be > 0 ms");
  GraphModule m(build_model("lenet5"));
  DependencyGraph deps(m->graph());
  auto s = make_importance("l1")->score(m, deps, {});
  EXPECT_THROW_MSG(solve_channel_target(deps, s, PruneTarget::parse("macs=0.99"), ChannelPlannerOptions()),
                   ValueError, "is out of reach");
  EXPECT_THROW_MSG(
      solve_channel_target(deps, s, PruneTarget::parse("latency=0.000001"),
                           ChannelPlannerOptions().latency_repeats(3)),
      ValueError, "is below the minimum");
  EXPECT_THROW_MSG(ChannelPlannerOptions().max_group_ratio(1.0).validate(), ValueError, "max_group_ratio");
}

// A group whose channels the output does not depend on is insensitive; the
// analysis finds it and the ratios let the plan cut it.
TEST(PruneSensitivity, FindsTheGroupThatCanGo) {
  Graph g;
  g.input("input", {1, 8, 8});
  g.conv2d("a", "input", 8, 3, 1, 1);
  g.unary("ra", OpKind::kReLU, "a");
  g.conv2d("b", "ra", 8, 3, 1, 1);
  g.unary("rb", OpKind::kReLU, "b");
  g.add("pool", OpKind::kGlobalAvgPool, NoAttrs{}, {"rb"});
  g.flatten("flat", "pool");
  g.linear("fc", "flat", 4);
  torch::manual_seed(5);
  GraphModule m(g);
  {
    torch::NoGradGuard ng;
    m->node_module("fc").weight.slice(1, 2).zero_();  // only b's channels 0, 1 reach the logits
  }
  Dataset d = make_synthetic(200, {1, 8, 8}, 4, 1);
  // Labels = the model's own predictions: baseline accuracy 100 %.
  {
    torch::NoGradGuard ng;
    m->eval();
    d.labels = m->forward(d.images).argmax(1);
  }
  DependencyGraph deps(g);
  auto scores = make_importance("l1")->score(m, deps, {});
  scores[deps.group_index("b")] = torch::tensor({9.0, 9.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0}, torch::kDouble);
  auto rows = channel_sensitivity(m, deps, scores, d, {0.25, 0.5, 0.75});
  ASSERT_EQ(rows.size(), 1u + 2 * 3);
  EXPECT_DOUBLE_EQ(rows[0].accuracy, 1.0);
  auto ratios = ratios_from_sensitivity(rows, 0.0);
  EXPECT_DOUBLE_EQ(ratios.at("b"), 0.75);  // 6 of 8 go, the two that matter stay
  auto plan = plan_from_ratios(deps, scores, ratios, ChannelPlannerOptions());
  EXPECT_EQ(plan.remove.at("b"), (std::vector<int64_t>{2, 3, 4, 5, 6, 7}));
  GraphModule small = prune_channels(m, deps, plan);
  EXPECT_DOUBLE_EQ(evaluate(small, d).accuracy, 1.0);
  EXPECT_THROW_MSG(channel_sensitivity(m, deps, scores, d, {1.0}), ValueError, "ratio must be in (0, 1)");
  EXPECT_THROW_MSG(plan_from_ratios(deps, scores, {{"zz", 0.5}}, ChannelPlannerOptions()), ValueError,
                   "no dependency group named 'zz'");
}
