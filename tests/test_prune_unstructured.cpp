// Unstructured and N:M masks, the transform chain, compressed checkpoints and
// the pruning callbacks (prune/unstructured.h, nn/transform_chain.h,
// prune/sparse_checkpoint.h, prune/callbacks.h).
#include <gtest/gtest.h>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/transform_chain.h"
#include "nnopt/prune/callbacks.h"
#include "nnopt/prune/sparse_checkpoint.h"
#include "nnopt/prune/unstructured.h"
#include "test_util.h"

using namespace nnopt;

namespace {

// input [8] -> a (linear 4) -> relu -> b (linear 3)
GraphModule two_linears() {
  Graph g;
  g.input("input", {8});
  g.linear("a", "input", 4);
  g.unary("relu", OpKind::kReLU, "a");
  g.linear("b", "relu", 3);
  torch::manual_seed(0);
  return GraphModule(g);
}

struct Times2Impl : TransformImpl {
  torch::Tensor forward(const torch::Tensor& x) override { return x * 2; }
  std::string describe() const override { return "x2"; }
};

// A small CNN with batch norm for the training callbacks: [1, 8, 8] -> 4 classes.
Graph small_cnn() {
  Graph g;
  g.input("input", {1, 8, 8});
  g.conv2d("c1", "input", 8, 3, 1, 1);
  g.batch_norm("bn1", "c1");
  g.unary("r1", OpKind::kReLU, "bn1");
  g.conv2d("c2", "r1", 16, 3, 1, 1);
  g.batch_norm("bn2", "c2");
  g.unary("r2", OpKind::kReLU, "bn2");
  g.add("pool", OpKind::kGlobalAvgPool, NoAttrs{}, {"r2"});
  g.flatten("flat", "pool");
  g.linear("fc", "flat", 4);
  return g;
}

TrainOptions quick(int64_t epochs) {
  return TrainOptions(epochs).batch_size(32).lr(0.05).progress("off").max_batches(8);
}

}  // namespace

TEST(PruneUnstructured, GlobalMagnitudeUsesOneThresholdPerLayerUsesEach) {
  GraphModule m = two_linears();
  {
    torch::NoGradGuard ng;
    m->node_module("a").weight.copy_(torch::arange(1, 33, torch::kFloat).reshape({4, 8}) / 100);  // small
    m->node_module("b").weight.copy_(torch::arange(1, 13, torch::kFloat).reshape({3, 4}));        // large
  }
  auto g = magnitude_masks(m, 0.5, true);  // 22 of 44 go: all of them from a
  EXPECT_EQ(g["a"].logical_not().sum().item<int64_t>(), 22);
  EXPECT_EQ(g["b"].logical_not().sum().item<int64_t>(), 0);
  EXPECT_FALSE(g["a"][0][0].item<bool>());   // the smallest went
  EXPECT_TRUE(g["a"][3][7].item<bool>());    // the largest of a stayed
  auto p = magnitude_masks(m, 0.5, false);
  EXPECT_EQ(p["a"].logical_not().sum().item<int64_t>(), 16);
  EXPECT_EQ(p["b"].logical_not().sum().item<int64_t>(), 6);
  EXPECT_FALSE(p["b"][0][0].item<bool>());
  EXPECT_THROW_MSG(magnitude_masks(m, 1.0, true), ValueError, "sparsity must be in [0, 1)");
}

TEST(PruneUnstructured, TwoFourKeepsTheTwoLargestOfEveryFourInputChannels) {
  Graph g;
  g.input("input", {1, 6, 6});
  g.conv2d("stem", "input", 8, 3);  // 1 input channel: skipped
  g.conv2d("c", "stem", 4, 3);      // 8 input channels: 2 blocks of 4 per (out, kh, kw)
  torch::manual_seed(2);
  GraphModule m(g);
  auto masks = nm_masks(m, 2, 4);
  ASSERT_EQ(masks.count("stem"), 0u);
  auto keep = masks.at("c");                                  // [4, 8, 3, 3]
  auto blocks = keep.permute({0, 2, 3, 1}).reshape({-1, 4});  // along the input channels
  EXPECT_TRUE((blocks.sum(1) == 2).all().item<bool>());
  auto w = m->node_module("c").weight.detach().abs().permute({0, 2, 3, 1}).reshape({-1, 4});
  auto kept_min = torch::where(blocks, w, torch::full_like(w, 1e9)).amin(1);
  auto dropped_max = torch::where(blocks, torch::full_like(w, -1), w).amax(1);
  EXPECT_TRUE((kept_min >= dropped_max).all().item<bool>());
  EXPECT_THROW_MSG(nm_masks(m, 4, 4), ValueError, "0 < N < M");
}

TEST(PruneUnstructured, MasksKeepZerosWhileTrainingAndChainWithOtherTransforms) {
  GraphModule m(small_cnn());
  auto masks = magnitude_masks(m, 0.6, true);
  apply_masks(m, masks);
  add_weight_transform(m, "c2", std::make_shared<Times2Impl>());
  EXPECT_EQ(m->node_module("c2").weight_transform->describe().rfind("chain(mask(", 0), 0u);
  {
    torch::NoGradGuard ng;
    auto want = m->node_module("c2").weight * masks["c2"].to(torch::kFloat) * 2;
    EXPECT_TRUE(torch::equal(m->effective_weight("c2"), want));
  }
  Trainer tr(m, quick(1).weight_decay(5e-4));
  tr.fit(make_synthetic(256, {1, 8, 8}, 4, 1));
  for (const auto& [node, mask] : masks) {
    auto w = m->effective_weight(node).detach();
    EXPECT_EQ(w.masked_select(mask.logical_not()).abs().max().item<double>(), 0.0) << node;
  }
  EXPECT_GE(weight_sparsity(m), 0.6 - 1e-3);
  bake_masks(m);
  ASSERT_NE(m->node_module("c2").weight_transform, nullptr);
  EXPECT_EQ(m->node_module("c2").weight_transform->describe(), "x2");  // the other transform stays
  EXPECT_EQ(m->node_module("c1").weight_transform, nullptr);
  EXPECT_GE((m->node_module("c1").weight == 0).to(torch::kDouble).mean().item<double>(), 0.3);
}

TEST(PruneUnstructured, SparseCheckpointIsFiveTimesSmallerAndRestoresTheDenseModel) {
  std::string dir = test::temp_dir("prune_sparse");
  torch::manual_seed(1);
  GraphModule m(build_model("resnet20"));
  m->eval();
  apply_masks(m, magnitude_masks(m, 0.9, true));
  int64_t n = save_sparse_model(path_join(dir, "s.nnopt"), m, "{\"note\": 1}");
  EXPECT_GE(n, 19);  // most of the 21 convs and the fc (layers under 50 % zeros stay dense)
  bake_masks(m);
  save_model(path_join(dir, "d.nnopt"), m);
  double ratio = static_cast<double>(file_size(path_join(dir, "d.nnopt"))) / file_size(path_join(dir, "s.nnopt"));
  EXPECT_GE(ratio, 5.0);
  std::string meta;
  GraphModule back = load_sparse_model(path_join(dir, "s.nnopt"), &meta);
  EXPECT_EQ(meta, "{\"note\":1}");
  auto a = m->state(), b = back->state();
  for (const auto& [k, t] : a) EXPECT_TRUE(torch::equal(t, b.at(k))) << k;
  // Dense checkpoints load too.
  GraphModule dense = load_sparse_model(path_join(dir, "d.nnopt"));
  EXPECT_TRUE(torch::equal(dense->node_module("conv1").weight, m->node_module("conv1").weight));
  // A damaged sparse entry is a FileError naming the tensor.
  Checkpoint ck = load_checkpoint(path_join(dir, "s.nnopt"));
  ck.tensors["__sparse.fc.weight.values"] = ck.tensors["__sparse.fc.weight.values"].slice(0, 1);
  save_checkpoint(path_join(dir, "bad.nnopt"), ck);
  EXPECT_THROW_MSG(load_sparse_model(path_join(dir, "bad.nnopt")), FileError, "sparse tensor 'fc.weight' has");
}

TEST(PruneCallbacks, AgpReachesTheTargetSparsityDuringTraining) {
  GraphModule m(small_cnn());
  auto sched = PruneSchedule("agp", 0.8).begin_step(0).end_step(12).frequency(2);
  auto cb = std::make_shared<UnstructuredPruneCallback>(m, sched, true);
  Trainer tr(m, quick(2));
  tr.add_callback(cb);
  auto r = tr.fit(make_synthetic(256, {1, 8, 8}, 4, 1));
  EXPECT_NEAR(weight_sparsity(m), 0.8, 0.01);
  EXPECT_NEAR(r.history.back().extra.at("weight_sparsity"), 0.8, 0.01);
  EXPECT_DOUBLE_EQ(cb->sparsity(), 0.8);
}

TEST(PruneCallbacks, GradualAndSoftChannelPruningEndInAnExactSurgery) {
  for (const char* kind : {"gradual", "sfp"}) {
    SCOPED_TRACE(kind);
    torch::manual_seed(3);
    GraphModule m(small_cnn());
    auto sched = PruneSchedule(kind, 0.5).begin_step(0).end_step(10).frequency(2);
    auto cb = std::make_shared<ChannelPruneCallback>(m, make_importance("l2"), ImportanceData(), sched,
                                                     TargetKind::kSparsity, ChannelPlannerOptions());
    Trainer tr(m, quick(2));
    tr.add_callback(cb);
    tr.fit(make_synthetic(256, {1, 8, 8}, 4, 1));
    EXPECT_GE(cb->plan().count(), 12);  // half of the 24 channels
    m->eval();
    GraphModule small = prune_channels(m, cb->deps(), cb->plan());
    small->eval();
    auto x = torch::randn({4, 1, 8, 8});
    torch::NoGradGuard ng;
    EXPECT_LE((small->forward(x) - m->forward(x)).abs().max().item<double>(), 1e-5);
    EXPECT_LT(small->graph().macs(), m->graph().macs() / 2);
  }
}

TEST(PruneCallbacks, BnL1PenaltyShrinksTheScales) {
  auto gamma_sum = [](double lambda) {
    torch::manual_seed(4);
    GraphModule m(small_cnn());
    Trainer tr(m, quick(2).weight_decay(0));
    if (lambda > 0) tr.add_callback(std::make_shared<BnL1Callback>(lambda));
    tr.fit(make_synthetic(256, {1, 8, 8}, 4, 1));
    return m->node_module("bn1").weight.abs().sum().item<double>() +
           m->node_module("bn2").weight.abs().sum().item<double>();
  };
  EXPECT_LT(gamma_sum(1e-2), gamma_sum(0) - 0.1);
  EXPECT_THROW_MSG(BnL1Callback(-1), ValueError, "lambda must be >= 0");
}
