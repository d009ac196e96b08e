// Per-layer conv kernel choice (deploy/conv_tuning.h): every kernel gives the
// same values as LibTorch's own choice, tuning picks one per conv and
// covers grouped convs, and bad arguments are refused. Deployment tuning
// (tune_deployment) also picks the thread count, which eval-mode forward
// passes then run on.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/models/zoo.h"
#include "test_util.h"

using namespace nnopt;

namespace {
void set_all(GraphModule& m, ConvKernel k) {
  for (const auto& n : m->graph().nodes())
    if (n.op == OpKind::kConv2d) m->node_module(n.name).conv_kernel = k;
}

// Records the intra-op thread count in effect when the model reaches it.
struct ThreadProbeImpl : TransformImpl {
  int seen = -1;
  torch::Tensor forward(const torch::Tensor& x) override {
    seen = torch::get_num_threads();
    return x;
  }
};
}  // namespace

TEST(ConvTuning, EveryKernelGivesTheSameOutputs) {
  // resnet20 (strided and 1x1 shortcut convs) and mobilenet-v2 (depthwise,
  // which has no im2col + GEMM kernel and must fall back).
  for (const char* name : {"resnet20", "mobilenetv2"}) {
    torch::manual_seed(0);
    GraphModule m(build_model(name));
    m->eval();
    torch::NoGradGuard ng;
    auto x = torch::randn({3, 1, 28, 28});
    auto ref = m->forward(x);
    for (ConvKernel k : {ConvKernel::kOnednn, ConvKernel::kNative}) {
      set_all(m, k);
      auto y = m->forward(x);
      EXPECT_LE((y - ref).abs().max().item<double>(), 1e-4) << name << " " << conv_kernel_name(k);
    }
  }
}

TEST(ConvTuning, TuningChoosesAKernelPerConvAndKeepsTheOutputs) {
  torch::manual_seed(1);
  GraphModule m(build_model("mobilenetv2"));
  m->eval();
  auto x = torch::randn({2, 1, 28, 28});
  torch::Tensor ref;
  {
    torch::NoGradGuard ng;
    ref = m->forward(x);
  }
  auto t = tune_conv_kernels(m, 2, 1, 2);
  int64_t convs = 0, grouped = 0;
  for (const auto& n : m->graph().nodes()) {
    if (n.op != OpKind::kConv2d) continue;
    ++convs;
    const bool dw = n.as<Conv2dAttrs>().groups > 1;
    grouped += dw;
    auto k = m->node_module(n.name).conv_kernel;
    EXPECT_NE(k, ConvKernel::kAuto) << n.name;
    if (dw) EXPECT_EQ(k, ConvKernel::kOnednn) << n.name << ": grouped convs have no native kernel";
  }
  ASSERT_EQ(static_cast<int64_t>(t.size()), convs);
  EXPECT_GT(grouped, 0);
  for (const auto& r : t) {
    EXPECT_GT(r.onednn_ms, 0) << r.node;
    if (r.chosen == ConvKernel::kNative) EXPECT_LT(r.native_ms, r.onednn_ms) << r.node;
  }
  EXPECT_NE(conv_tuning_table(t).find("tuned"), std::string::npos);
  torch::NoGradGuard ng;
  EXPECT_LE((m->forward(x) - ref).abs().max().item<double>(), 1e-4);
  reset_conv_kernels(m);
  for (const auto& n : m->graph().nodes())
    if (n.op == OpKind::kConv2d) EXPECT_EQ(m->node_module(n.name).conv_kernel, ConvKernel::kAuto);
}

TEST(ConvTuning, TrainingThroughAForcedKernelGivesTheSameGradients) {
  torch::manual_seed(2);
  GraphModule m(build_model("resnet20"));
  m->train();
  auto x = torch::randn({2, 1, 28, 28});
  auto grad_of = [&](ConvKernel k) {
    set_all(m, k);
    m->zero_grad();
    m->forward(x).square().sum().backward();
    return m->node_module("conv1").weight.grad().clone();
  };
  auto g0 = grad_of(ConvKernel::kAuto);
  for (ConvKernel k : {ConvKernel::kOnednn, ConvKernel::kNative})
    EXPECT_LE((grad_of(k) - g0).abs().max().item<double>(), 1e-3 * (1 + g0.abs().max().item<double>()))
        << conv_kernel_name(k);
}

TEST(ConvTuning, BadArgumentsAreRefused) {
  GraphModule m(build_model("lenet5"));
  try {
    tune_conv_kernels(m, 0);
    FAIL() << "batch 0 accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("conv tuning batch must be >= 1, got 0"), std::string::npos);
  }
  EXPECT_THROW(tune_conv_kernels(m, 1, 0), ValueError);
  EXPECT_THROW(tune_conv_kernels(m, 1, 1, 0), ValueError);
}

TEST(ConvTuning, ScopedRunThreadsSetsAndRestoresTheCount) {
  const int before = threads();
  {
    ScopedRunThreads scope(before + 1);
    EXPECT_EQ(torch::get_num_threads(), before + 1);
    {
      ScopedRunThreads inner(0);  // 0: leave it
      EXPECT_EQ(torch::get_num_threads(), before + 1);
    }
    EXPECT_EQ(torch::get_num_threads(), before + 1);
  }
  EXPECT_EQ(threads(), before);
}

TEST(ConvTuning, RunThreadsApplyToEvalPassesOnly) {
  GraphModule m(build_model("lenet5"));
  auto probe = std::make_shared<ThreadProbeImpl>();
  m->set_activation_transform("relu1", probe);
  const int process = threads(), run = process + 1;
  m->set_run_threads(run);
  auto x = torch::randn({2, 1, 28, 28});
  m->eval();
  {
    torch::NoGradGuard ng;
    m->forward(x);
  }
  EXPECT_EQ(probe->seen, run);
  EXPECT_EQ(threads(), process) << "the count is not restored after the pass";
  m->train();
  m->forward(x);
  EXPECT_EQ(probe->seen, process) << "a training pass ran on the deployment's thread count";
  m->set_run_threads(-3);
  EXPECT_EQ(m->run_threads(), 0);
}

TEST(ConvTuning, DeploymentTuningPicksTheFastestThreadCountAndKeepsTheOutputs) {
  torch::manual_seed(3);
  GraphModule m(build_model("resnet20"));
  m->eval();
  auto x = torch::randn({2, 1, 28, 28});
  torch::Tensor ref;
  {
    torch::NoGradGuard ng;
    ref = m->forward(x);
  }
  const int process = threads();
  DeployTuning t = tune_deployment(m, 2, 2, 1, 3);
  ASSERT_EQ(t.candidates.size(), 4u);  // {1, 2} threads x {auto, tuned} kernels
  EXPECT_EQ(t.batch, 2);
  ASSERT_GE(t.threads(), 1);
  ASSERT_LE(t.threads(), 2);
  for (const auto& c : t.candidates) {
    EXPECT_GT(c.ms, 0);
    EXPECT_GE(c.ms, t.chosen.ms);
  }
  EXPECT_EQ(m->run_threads(), t.threads());
  EXPECT_EQ(threads(), process);
  EXPECT_EQ(t.kernels.size(), 21u);  // resnet20: 19 3x3 convs and 2 1x1 shortcuts
  for (const auto& k : t.kernels)
    EXPECT_EQ(m->node_module(k.node).conv_kernel, t.chosen.tuned_kernels ? k.chosen : ConvKernel::kAuto) << k.node;
  EXPECT_NE(deploy_tuning_line(t).find(std::to_string(t.threads()) + " thread(s)"), std::string::npos)
      << deploy_tuning_line(t);
  {
    torch::NoGradGuard ng;
    EXPECT_LE((m->forward(x) - ref).abs().max().item<double>(), 1e-4);
  }
  reset_conv_kernels(m);
  EXPECT_EQ(m->run_threads(), 0);
  try {
    tune_deployment(m, 0);
    FAIL() << "batch 0 accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("deployment tuning batch must be >= 1, got 0"), std::string::npos);
  }
  EXPECT_THROW(tune_deployment(m, 1, 1, 1, 2), ValueError);
}

// Every timing compared with another goes through alternating_medians: the
// measurements run in turn, round after round, and each gets its median.
TEST(AlternatingMedians, RunsInTurnAndTakesEachMedian) {
  std::vector<int> order;
  const std::vector<double> a{5, 1, 3, 9}, b{2, 8, 4, 6};
  size_t ia = 0, ib = 0;
  std::vector<std::function<double()>> measure{[&] {
                                                 order.push_back(0);
                                                 return a[ia++];
                                               },
                                               [&] {
                                                 order.push_back(1);
                                                 return b[ib++];
                                               }};
  const std::vector<double> three = alternating_medians(measure, 3);
  EXPECT_EQ(order, (std::vector<int>{0, 1, 0, 1, 0, 1}));
  EXPECT_EQ(three, (std::vector<double>{3, 4}));  // medians of {5, 1, 3} and {2, 8, 4}
  ia = ib = 0;
  EXPECT_EQ(alternating_medians(measure, 4), (std::vector<double>{4, 5}));  // even count: mean of the middle two
  EXPECT_THROW_MSG(alternating_medians(measure, 0), ValueError, "alternating rounds must be >= 1, got 0");
}

// alternating_forward_latency: one random batch of the given shape, no grad,
// every forward in turn (warm-up + repeats per measurement), one median each.
TEST(AlternatingMedians, ForwardLatencyTimesEachForwardInTurnOnOneBatch) {
  std::vector<int> order;
  std::vector<torch::Tensor> seen;
  std::vector<ForwardFn> fwd{[&](const torch::Tensor& x) {
                               order.push_back(0);
                               seen.push_back(x);
                               EXPECT_FALSE(torch::GradMode::is_enabled());
                             },
                             [&](const torch::Tensor& x) {
                               order.push_back(1);
                               seen.push_back(x);
                             }};
  LatencyOptions lo;
  lo.warmup = 1;
  lo.repeats = 3;
  const std::vector<double> ms = alternating_forward_latency(fwd, {1, 28, 28}, 4, 2, lo);
  ASSERT_EQ(ms.size(), 2u);
  EXPECT_GE(ms[0], 0.0);
  // Per round: forward 0 four times (1 warm-up + 3 timed), then forward 1 four times.
  EXPECT_EQ(order, (std::vector<int>{0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1}));
  ASSERT_EQ(seen.size(), 16u);
  EXPECT_EQ(seen[0].sizes(), (std::vector<int64_t>{4, 1, 28, 28}));
  for (const auto& x : seen) EXPECT_TRUE(x.is_same(seen[0]));  // the same batch for all
  EXPECT_THROW_MSG(alternating_forward_latency({}, {1, 28, 28}, 4, 2, lo), ValueError,
                   "latency: no models to time");
  EXPECT_THROW_MSG(alternating_forward_latency(fwd, {1, 28, 28}, 0, 2, lo), ValueError,
                   "latency batch must be >= 1, got 0");
  EXPECT_THROW_MSG(alternating_forward_latency(fwd, {1, 28, 28}, 4, 0, lo), ValueError,
                   "alternating rounds must be >= 1, got 0");
}
