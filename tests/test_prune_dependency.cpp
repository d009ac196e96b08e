// Dependency groups and channel surgery (prune/dependency.h, prune/surgery.h).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/torchscript.h"
#include "nnopt/prune/dependency.h"
#include "nnopt/prune/surgery.h"
#include "test_paths.h"
#include "test_util.h"

using namespace nnopt;

namespace {

Graph zoo(const std::string& name, Shape shape = {1, 28, 28}) {
  ModelOptions o;
  o.input_shape = shape;
  return build_model(name, o);
}

std::set<std::string> roles_of(const PruneUnit& u, SliceRole role) {
  std::set<std::string> s;
  for (const auto& sl : u.slices)
    if (sl.role == role) s.insert(sl.node);
  return s;
}

const DependencyGroup* find_group_with(const DependencyGraph& d, const std::string& node) {
  for (const auto& g : d.groups())
    if (std::find(g.nodes.begin(), g.nodes.end(), node) != g.nodes.end()) return &g;
  return nullptr;
}

// Sets batch-norm statistics to those of a random batch (momentum 1 for one
// train-mode pass) and randomizes the affine parameters, so that pruned
// channels matter and activations stay near unit scale.
GraphModule realistic(const Graph& g0, uint64_t seed) {
  Graph g = g0;
  for (const auto& n : g0.nodes())
    if (n.op == OpKind::kBatchNorm) g.mutable_node(n.name).as<BatchNormAttrs>().momentum = 1.0;
  torch::manual_seed(seed);
  GraphModule m(g);
  {
    torch::NoGradGuard ng;
    m->train();
    Shape s = g.input_shape();
    s.insert(s.begin(), 16);
    m->forward(torch::randn(s));
    for (const auto& n : g.nodes())
      if (n.op == OpKind::kBatchNorm) {
        auto& nm = m->node_module(n.name);
        nm.weight.uniform_(0.5, 1.5);
        nm.bias.normal_(0, 0.2);
      }
  }
  m->eval();
  return m;
}

// Removes a random ~40 % of every group (at least one channel kept).
ChannelPlan random_plan(const DependencyGraph& d, uint64_t seed) {
  torch::manual_seed(seed);
  ChannelPlan p;
  for (const auto& g : d.groups()) {
    int64_t k = g.size() * 2 / 5;
    if (k == 0 || k >= g.size()) continue;
    auto perm = torch::randperm(g.size(), torch::kLong);
    std::vector<int64_t> v(perm.data_ptr<int64_t>(), perm.data_ptr<int64_t>() + k);
    std::sort(v.begin(), v.end());
    p.remove[g.name] = v;
  }
  return p;
}

// Output of the physically pruned model `small` vs the masked model (a copy
// of `model` with the plan's channels zeroed) on random inputs; returns the
// max abs diff. The mask must change the output by more than `min_change`
// (else the comparison would prove nothing).
double pruned_vs_masked(GraphModule& model, const DependencyGraph& deps, const ChannelPlan& plan,
                        GraphModule& small, uint64_t seed, double min_change = 1e-3) {
  GraphModule masked(model->graph());
  masked->load_state(model->state());
  masked->eval();
  zero_channels(masked, deps, plan);
  Shape s = model->graph().input_shape();
  s.insert(s.begin(), 4);
  torch::manual_seed(seed);
  auto x = torch::randn(s);
  torch::NoGradGuard ng;
  small->eval();
  auto a = small->forward(x), b = masked->forward(x);
  EXPECT_GT((model->forward(x) - b).abs().max().item<double>(), min_change);
  return (a - b).abs().max().item<double>();
}

// The same for a random plan (~40 % of every group).
double surgery_gap(GraphModule& model, uint64_t seed, Graph* pruned_graph = nullptr) {
  DependencyGraph deps(model->graph());
  ChannelPlan plan = random_plan(deps, seed);
  EXPECT_GT(plan.count(), 0);
  GraphModule small = prune_channels(model, deps, plan);
  EXPECT_LT(small->graph().macs(), model->graph().macs());
  EXPECT_LT(small->graph().num_params(), model->graph().num_params());
  if (pruned_graph) *pruned_graph = small->graph();
  return pruned_vs_masked(model, deps, plan, small, seed + 1);
}

}  // namespace

TEST(PruneDependency, ResNetResidualAddsTieEveryBranchOfAStage) {
  DependencyGraph d(zoo("resnet20"));
  // 3 stage groups + 9 block-internal groups (conv1 -> bn1 -> relu1 -> conv2).
  EXPECT_EQ(d.groups().size(), 12u) << d.to_string();
  const DependencyGroup& s1 = d.group("conv1");
  EXPECT_EQ(s1.size(), 16);
  EXPECT_EQ(s1.producers, (std::vector<std::string>{"conv1", "layer1.0.conv2", "layer1.1.conv2",
                                                    "layer1.2.conv2"}));
  for (const auto& u : s1.units) {
    EXPECT_EQ(roles_of(u, SliceRole::kOut).size(), 4u);
    EXPECT_EQ(roles_of(u, SliceRole::kBn),
              (std::set<std::string>{"bn1", "layer1.0.bn2", "layer1.1.bn2", "layer1.2.bn2"}));
    // Every reader of the stage: the block convs and the next stage's first conv and shortcut.
    EXPECT_EQ(roles_of(u, SliceRole::kIn),
              (std::set<std::string>{"layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1",
                                     "layer2.0.conv1", "layer2.0.shortcut.0"}));
  }
  const DependencyGroup& s3 = d.group("layer3.0.conv2");
  EXPECT_EQ(s3.size(), 64);
  EXPECT_EQ(s3.producers.size(), 4u);  // conv2 of 3 blocks + the projection shortcut
  EXPECT_EQ(roles_of(s3.units[5], SliceRole::kIn).count("fc"), 1u);  // through pool + flatten
  const DependencyGroup& inner = d.group("layer2.1.conv1");
  EXPECT_EQ(inner.size(), 32);
  EXPECT_EQ(inner.producers, std::vector<std::string>{"layer2.1.conv1"});
  EXPECT_EQ(roles_of(inner.units[0], SliceRole::kIn), std::set<std::string>{"layer2.1.conv2"});
  // The logits stay: fc's outputs are not prunable.
  for (const auto& g : d.groups())
    for (const auto& u : g.units) EXPECT_EQ(roles_of(u, SliceRole::kOut).count("fc"), 0u);
}

TEST(PruneDependency, MobileNetV2DepthwiseTiesInputAndOutput) {
  DependencyGraph d(zoo("mobilenetv2", {3, 32, 32}));
  // Block 2: expand 1x1 -> bn -> relu6 -> depthwise 3x3 -> bn -> relu6 -> project 1x1.
  const DependencyGroup& g = d.group("features.2.conv.0.0");
  EXPECT_EQ(g.producers, std::vector<std::string>{"features.2.conv.0.0"});
  EXPECT_EQ(g.size(), 96);
  for (const auto& u : g.units) {
    EXPECT_EQ(roles_of(u, SliceRole::kOut),
              (std::set<std::string>{"features.2.conv.0.0", "features.2.conv.1.0"}));
    EXPECT_EQ(roles_of(u, SliceRole::kBn),
              (std::set<std::string>{"features.2.conv.0.1", "features.2.conv.1.1"}));
    EXPECT_EQ(roles_of(u, SliceRole::kIn), std::set<std::string>{"features.2.conv.2"});
  }
  // Block 1 (t = 1) has no expansion: its depthwise conv is tied to the stem.
  const DependencyGroup* stem = find_group_with(d, "features.1.conv.0.0");
  ASSERT_NE(stem, nullptr);
  EXPECT_EQ(stem->name, "features.0.0");
  // Blocks 2 and 3 share a residual add: their projections are one group.
  const DependencyGroup* res = find_group_with(d, "features.3.conv.2");
  ASSERT_NE(res, nullptr);
  EXPECT_EQ(res->producers, (std::vector<std::string>{"features.2.conv.2", "features.3.conv.2"}));
}

TEST(PruneDependency, FlattenExpandsAChannelIntoItsFeatures) {
  DependencyGraph d(zoo("lenet5"));
  const DependencyGroup& g = d.group("conv2");
  ASSERT_EQ(g.size(), 16);
  // fc1 reads 16 x 5 x 5 features: channel c owns features 25c .. 25c + 24.
  std::vector<int64_t> feats;
  for (const auto& s : g.units[3].slices)
    if (s.node == "fc1" && s.role == SliceRole::kIn) feats.push_back(s.index);
  std::sort(feats.begin(), feats.end());
  ASSERT_EQ(feats.size(), 25u);
  EXPECT_EQ(feats.front(), 75);
  EXPECT_EQ(feats.back(), 99);
  EXPECT_EQ(d.groups().size(), 4u) << d.to_string();  // conv1, conv2, fc1, fc2
}

TEST(PruneDependency, ConcatLaysChannelsSideBySide) {
  Graph g;
  g.input("input", {3, 8, 8});
  g.conv2d("a", "input", 4, 3, 1, 1);
  g.conv2d("b", "input", 6, 1);
  g.concat("cat", {"a", "b"});
  g.batch_norm("bn", "cat");
  g.conv2d("c", "bn", 5, 3, 1, 1);
  g.add("pool", OpKind::kGlobalAvgPool, NoAttrs{}, {"c"});
  g.flatten("flat", "pool");
  g.linear("fc", "flat", 2);
  DependencyGraph d(g);
  const DependencyGroup& cat = d.group("a");
  ASSERT_EQ(cat.size(), 10);  // 4 from a, then 6 from b
  EXPECT_EQ(cat.producers, (std::vector<std::string>{"a", "b"}));
  for (int64_t u = 0; u < 10; ++u) {
    bool from_a = u < 4;
    EXPECT_EQ(roles_of(cat.units[u], SliceRole::kOut), std::set<std::string>{from_a ? "a" : "b"});
    for (const auto& s : cat.units[u].slices) {
      if (s.role == SliceRole::kOut) EXPECT_EQ(s.index, from_a ? u : u - 4);
      else EXPECT_EQ(s.index, u);  // bn and c's input channel: the concat offset
    }
  }
  GraphModule m = realistic(g, 3);
  EXPECT_LE(surgery_gap(m, 4), 1e-5);
}

TEST(PruneSurgery, PrunedEqualsMaskedOnZooModels) {
  for (const char* name : {"lenet5", "vgg-small", "resnet20", "mobilenetv2"}) {
    SCOPED_TRACE(name);
    Shape shape = std::string(name) == "mobilenetv2" ? Shape{3, 16, 16} : Shape{1, 28, 28};
    GraphModule m = realistic(zoo(name, shape), 7);
    Graph pg;
    EXPECT_LE(surgery_gap(m, 11, &pg), 1e-5);
    // The pruned graph is valid and round-trips.
    EXPECT_EQ(Graph::from_json(pg.to_json()), pg);
  }
}

TEST(PruneSurgery, ExactAttributesAfterRemoval) {
  DependencyGraph d(zoo("resnet20"));
  ChannelPlan p;
  p.remove["conv1"] = {0, 1, 2, 3};           // the whole first stage loses 4 channels
  p.remove["layer3.1.conv1"] = {10, 20, 30};  // block internal
  Graph g = prune_graph(d, p);
  EXPECT_EQ(g.node("conv1").as<Conv2dAttrs>().out_channels, 12);
  EXPECT_EQ(g.node("layer1.2.conv2").as<Conv2dAttrs>().out_channels, 12);
  EXPECT_EQ(g.node("layer1.1.conv1").as<Conv2dAttrs>().in_channels, 12);
  EXPECT_EQ(g.node("layer2.0.shortcut.0").as<Conv2dAttrs>().in_channels, 12);
  EXPECT_EQ(g.node("layer1.0.bn2").as<BatchNormAttrs>().num_features, 12);
  EXPECT_EQ(g.node("layer3.1.conv1").as<Conv2dAttrs>().out_channels, 61);
  EXPECT_EQ(g.node("layer3.1.conv2").as<Conv2dAttrs>().in_channels, 61);
  EXPECT_EQ(ChannelPlan::from_json(p.to_json()).remove, p.remove);
  // Depthwise: groups follow the channel count.
  DependencyGraph dm(zoo("mobilenetv2", {3, 16, 16}));
  ChannelPlan q;
  q.remove["features.2.conv.0.0"] = {1, 2};
  Graph gm = prune_graph(dm, q);
  const auto& dw = gm.node("features.2.conv.1.0").as<Conv2dAttrs>();
  EXPECT_EQ(dw.groups, 94);
  EXPECT_EQ(dw.in_channels, 94);
  EXPECT_EQ(dw.out_channels, 94);
}

TEST(PruneSurgery, BadPlansAreClearErrors) {
  DependencyGraph d(zoo("lenet5"));
  ChannelPlan all;
  for (int64_t i = 0; i < 6; ++i) all.remove["conv1"].push_back(i);
  EXPECT_THROW_MSG(prune_graph(d, all), ValueError, "removes every channel of node 'conv1'");
  ChannelPlan unknown;
  unknown.remove["nope"] = {0};
  EXPECT_THROW_MSG(prune_graph(d, unknown), ValueError, "no dependency group named 'nope'");
  ChannelPlan range;
  range.remove["conv1"] = {6};
  EXPECT_THROW_MSG(prune_graph(d, range), ValueError, "index 6 is out of range");
  ChannelPlan twice;
  twice.remove["conv1"] = {1, 1};
  EXPECT_THROW_MSG(prune_graph(d, twice), ValueError, "twice");
  GraphModule other(zoo("mlp"));
  EXPECT_THROW_MSG(prune_channels(other, d, ChannelPlan()), ValueError, "not the one");
  EXPECT_THROW_MSG(ChannelPlan::from_json("{\"remove\": 3}"), ValueError, "channel plan");
}

// A model written by PyTorch: inverted residuals, a grouped (non-depthwise)
// side conv whose input channels are locked, concat, hardswish, nn.Flatten.
TEST(PruneSurgery, PrunedEqualsMaskedOnTorchScriptImport) {
  const char* py = "/usr/bin/python3";
  if (std::system((std::string(py) + " -c 'import torch' >/dev/null 2>&1").c_str()) != 0)
    GTEST_SKIP() << "python3 with torch is not available";
  std::string dir = test::temp_dir("prune_ts");
  std::string cmd = std::string(py) + " '" NNOPT_SOURCE_DIR "/tests/py/ts_make_models.py' '" + dir +
                    "' >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  for (auto [file, shape] : {std::pair<const char*, Shape>{"mobilenet_script.pt", {3, 16, 16}},
                             {"resnet_trace.pt", {3, 16, 16}},
                             {"lenet_script.pt", {1, 28, 28}}}) {
    SCOPED_TRACE(file);
    ImportedModel im = import_torchscript(path_join(dir, file), shape);
    GraphModule m(im.graph);
    m->load_state(im.tensors);
    m->eval();
    DependencyGraph d(im.graph);
    EXPECT_GE(d.groups().size(), 3u) << d.to_string();
    EXPECT_LE(surgery_gap(m, 5), 1e-5);
  }
  std::filesystem::remove_all(dir);
}

// Block (depth) pruning: a residual branch's inner width may go to zero.
TEST(PruneSurgery, EmptiedResidualBranchesGoWhole) {
  GraphModule m = realistic(zoo("resnet20"), 5);
  const Graph g20 = m->graph();
  DependencyGraph d(g20);
  std::set<std::string> removable;
  for (const auto& g : d.groups())
    if (g.removable()) removable.insert(g.name);
  // The nine block-internal groups (conv1 -> bn1 -> relu1 -> conv2); not the stages.
  ASSERT_EQ(removable.size(), 9u);
  EXPECT_TRUE(removable.count("layer1.1.conv1"));
  EXPECT_TRUE(removable.count("layer3.0.conv1"));  // a downsampling block: its shortcut stays
  EXPECT_FALSE(removable.count("conv1"));
  const auto& b = d.group("layer1.1.conv1");
  EXPECT_EQ(b.branch_nodes, (std::vector<std::string>{"layer1.1.conv1", "layer1.1.bn1", "layer1.1.relu1",
                                                      "layer1.1.conv2", "layer1.1.bn2"}));
  EXPECT_EQ(b.branch_join, "layer1.1.add");

  ChannelPlan plan = random_plan(d, 3);
  for (const char* name : {"layer1.1.conv1", "layer3.0.conv1"}) {
    plan.remove[name].clear();
    for (int64_t i = 0; i < d.group(name).size(); ++i) plan.remove[name].push_back(i);
  }
  GraphModule small = prune_channels(m, d, plan);
  const Graph& pg = small->graph();
  for (const char* gone : {"layer1.1.conv1", "layer1.1.relu1", "layer1.1.bn2", "layer3.0.conv2"})
    EXPECT_FALSE(pg.contains(gone)) << gone;
  EXPECT_EQ(pg.node("layer1.1.add").op, OpKind::kIdentity);
  EXPECT_EQ(pg.node("layer1.1.add").inputs, std::vector<std::string>{"layer1.0.relu2"});
  EXPECT_EQ(pg.node("layer3.0.add").inputs, std::vector<std::string>{"layer3.0.shortcut.1"});
  EXPECT_TRUE(pg.contains("layer3.0.shortcut.0"));
  EXPECT_EQ(Graph::from_json(pg.to_json()), pg);
  // The same plan without the two branches keeps every node: the difference in
  // MACs is at least the two branches' convs at their pruned widths.
  ChannelPlan partial = plan;
  partial.remove.erase("layer1.1.conv1");
  partial.remove.erase("layer3.0.conv1");
  Graph kept = prune_graph(d, partial);
  EXPECT_EQ(kept.size(), g20.size());
  EXPECT_LT(pg.macs(), kept.macs());
  EXPECT_EQ(pg.size(), g20.size() - 10);
  // Physically removed = masked (the branch adds exactly 0 in both).
  EXPECT_LE(pruned_vs_masked(m, d, plan, small, 9), 1e-5);
  // Groups that are not a branch's inner width still keep a channel.
  ChannelPlan stage;
  for (int64_t i = 0; i < 16; ++i) stage.remove["conv1"].push_back(i);
  EXPECT_THROW_MSG(prune_graph(d, stage), ValueError, "channel plan removes every channel of node");
}

TEST(PruneSurgery, EmptiedInvertedResidualOnMobileNetV2) {
  GraphModule m = realistic(zoo("mobilenetv2", {3, 16, 16}), 2);
  const Graph g = m->graph();
  DependencyGraph d(g);
  std::vector<std::string> removable;
  for (const auto& gr : d.groups())
    if (gr.removable()) removable.push_back(gr.name);
  // Expansion groups of the blocks with a residual add (stride 1, same width).
  ASSERT_FALSE(removable.empty());
  const auto& gr = d.group(removable.front());
  EXPECT_EQ(d.graph().node(gr.branch_join).op, OpKind::kAdd);
  ChannelPlan plan;
  for (int64_t i = 0; i < gr.size(); ++i) plan.remove[gr.name].push_back(i);
  GraphModule small = prune_channels(m, d, plan);
  EXPECT_EQ(small->graph().node(gr.branch_join).op, OpKind::kIdentity);
  for (const auto& n : gr.branch_nodes) EXPECT_FALSE(small->graph().contains(n)) << n;
  EXPECT_LE(pruned_vs_masked(m, d, plan, small, 4, 1e-4), 1e-5);
}

TEST(PruneSurgery, BothOperandsOfAnAddCannotGo) {
  // Two parallel branches joined by one add: either may go, not both.
  Graph g;
  std::string x = g.input("input", {4, 8, 8});
  auto branch = [&](const std::string& p) {
    std::string y = g.conv2d(p + ".conv1", x, 6, 3, 1, 1);
    y = g.unary(p + ".relu", OpKind::kReLU, y);
    y = g.conv2d(p + ".conv2", y, 4, 3, 1, 1);
    return g.batch_norm(p + ".bn", y);
  };
  std::string a = branch("a"), b = branch("b");
  g.add_op("add", {a, b});
  DependencyGraph d(g);
  ASSERT_TRUE(d.group("a.conv1").removable());
  ASSERT_TRUE(d.group("b.conv1").removable());
  ChannelPlan one, both;
  for (int64_t i = 0; i < 6; ++i) {
    one.remove["a.conv1"].push_back(i);
    both.remove["a.conv1"].push_back(i);
    both.remove["b.conv1"].push_back(i);
  }
  Graph pg = prune_graph(d, one);
  EXPECT_EQ(pg.node("add").inputs, std::vector<std::string>{"b.bn"});
  EXPECT_THROW_MSG(prune_graph(d, both), ValueError, "removes both operands of add 'add'");
}
