#include "nnopt/core/error.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/fold_bn.h"
#include "test_util.h"

using namespace nnopt;

namespace {
void randomize_bn(GraphModule& m) {
  torch::NoGradGuard ng;
  for (const auto& n : m->graph().nodes()) {
    if (n.op != OpKind::kBatchNorm) continue;
    auto& b = m->node_module(n.name);
    b.running_mean.uniform_(-0.5, 0.5);
    b.running_var.uniform_(0.5, 2.0);
    b.weight.uniform_(0.5, 1.5);
    b.bias.uniform_(-0.3, 0.3);
  }
}
}  // namespace

TEST(FoldBn, ZooModelsKeepTheirOutputs) {
  for (const char* name : {"resnet20", "mobilenetv2", "vgg-small"}) {
    torch::manual_seed(0);
    ModelOptions o;
    o.input_shape = {3, 32, 32};
    GraphModule m(build_model(name, o));
    randomize_bn(m);
    m->eval();
    BnFoldPlan plan = plan_bn_folding(m->graph());
    int64_t bns = 0;
    for (const auto& n : m->graph().nodes()) bns += n.op == OpKind::kBatchNorm;
    EXPECT_EQ(static_cast<int64_t>(plan.size()), bns) << name;  // every BN follows a conv here
    GraphModule f = apply_bn_folding(m, plan);
    for (const auto& n : f->graph().nodes()) EXPECT_NE(n.op, OpKind::kBatchNorm) << n.name;
    EXPECT_EQ(f->graph().macs(), m->graph().macs());
    auto x = torch::randn({4, 3, 32, 32});
    auto diff = (f->forward(x) - m->forward(x)).abs().max().item<float>();
    EXPECT_LT(diff, 1e-4) << name;
  }
}

TEST(FoldBn, SkipsSharedProducersAndRejectsTransforms) {
  Graph g;
  g.input("input", {2, 6, 6});
  g.conv2d("c", "input", 4, 3, 1, 1);
  g.batch_norm("bn", "c");
  g.add_op("sum", {"bn", "c"});  // c has two readers: cannot fold
  GraphModule m(g);
  EXPECT_TRUE(plan_bn_folding(g).empty());
  EXPECT_THROW_MSG(apply_bn_folding(m, {{"c", "bn"}}), ValueError, "'bn' cannot fold into 'c'");
  Graph h;
  h.input("input", {2, 6, 6});
  h.conv2d("c", "input", 4, 3, 1, 1);
  h.batch_norm("bn", "c");
  GraphModule mh(h);
  struct Id : TransformImpl {
    torch::Tensor forward(const torch::Tensor& w) override { return w; }
  };
  mh->set_weight_transform("c", std::make_shared<Id>());
  EXPECT_THROW_MSG(fold_batch_norm(mh), ValueError, "carries a transform");
}
