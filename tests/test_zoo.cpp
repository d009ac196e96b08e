// Model zoo tests. ZooReference* compare every model against the PyTorch reference
// models of tests/py/zoo_reference.py (run once per process); the other suites need
// no Python.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "nnopt/core/error.h"
#include "nnopt/ir/graph.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/prune/unstructured.h"
#include "test_paths.h"

using namespace nnopt;
using json = nlohmann::json;

namespace {

const std::vector<std::vector<int64_t>> kShapes = {{1, 28, 28}, {3, 32, 32}};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

ModelOptions options(std::vector<int64_t> shape, double width = 1.0, int64_t depth = 20,
                     int64_t classes = 10, double dropout = 0.0) {
  ModelOptions o;
  o.input_shape = std::move(shape);
  o.width = width;
  o.depth = depth;
  o.num_classes = classes;
  o.dropout = dropout;
  return o;
}

// ------------------------------------------------------------- the Python reference

struct Reference {
  std::string skip;  ///< non-empty: why the reference is unavailable
  std::string error;  ///< non-empty: the reference script failed
  json data;
};

Reference run_reference() {
  Reference r;
  const char* python = "/usr/bin/python3";
  if (access(python, X_OK) != 0) {
    r.skip = "/usr/bin/python3 not found";
    return r;
  }
  const std::string cmd =
      std::string(python) + " '" + NNOPT_SOURCE_DIR + "/tests/py/zoo_reference.py'";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) {
    r.error = "popen failed: " + cmd;
    return r;
  }
  std::string out;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int status = pclose(p);
  if (status != 0) {
    r.error = "'" + cmd + "' exited with status " + std::to_string(status);
    return r;
  }
  try {
    r.data = json::parse(out);
  } catch (const std::exception& e) {
    r.error = std::string("reference output is not JSON: ") + e.what();
    return r;
  }
  if (r.data.contains("skip")) r.skip = r.data["skip"].get<std::string>();
  return r;
}

const Reference& reference() {
  static const Reference r = run_reference();  // one Python run per test process
  return r;
}

#define REQUIRE_REFERENCE()                                 \
  do {                                                      \
    if (!reference().skip.empty()) GTEST_SKIP() << reference().skip; \
    ASSERT_TRUE(reference().error.empty()) << reference().error;     \
  } while (0)

struct RefConfig {
  std::string model;
  ModelOptions opt;
  const json* j;
  std::string label;
};

std::vector<RefConfig> reference_configs() {
  std::vector<RefConfig> out;
  for (const auto& c : reference().data.at("configs")) {
    RefConfig rc;
    rc.model = c.at("model").get<std::string>();
    rc.opt = options(c.at("input_shape").get<std::vector<int64_t>>(), c.at("width").get<double>(),
                     c.at("depth").get<int64_t>(), c.at("num_classes").get<int64_t>(),
                     c.at("dropout").get<double>());
    rc.j = &c;
    rc.label = rc.model + " input=" + shape_str(rc.opt.input_shape) +
               " width=" + std::to_string(rc.opt.width) + " depth=" + std::to_string(rc.opt.depth) +
               " classes=" + std::to_string(rc.opt.num_classes) +
               " dropout=" + std::to_string(rc.opt.dropout);
    out.push_back(std::move(rc));
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------- reference suites

TEST(ZooReference, CoversEveryModelAndBothInputShapes) {
  REQUIRE_REFERENCE();
  std::set<std::pair<std::string, std::string>> seen;  // (model, shape)
  std::set<int64_t> depths;
  std::set<std::string> half_width;
  for (const auto& c : reference_configs()) {
    seen.insert({c.model, shape_str(c.opt.input_shape)});
    if (c.model == "resnet") depths.insert(c.opt.depth);
    if (c.opt.width == 0.5) half_width.insert(c.model);
  }
  for (const auto& name : model_names())
    for (const auto& s : kShapes)
      EXPECT_TRUE(seen.count({name, shape_str(s)})) << name << " " << shape_str(s);
  EXPECT_TRUE(depths.count(110));
  EXPECT_EQ(half_width, (std::set<std::string>{"lenet5", "mlp", "mobilenetv2", "resnet", "vgg-small"}));
}

TEST(ZooReference, ParamsMacsAndOutputShapeMatchPyTorch) {
  REQUIRE_REFERENCE();
  const auto configs = reference_configs();
  ASSERT_GE(configs.size(), 30u);
  for (const auto& c : configs) {
    SCOPED_TRACE(c.label);
    Graph g = build_model(c.model, c.opt);
    EXPECT_EQ(g.num_params(), c.j->at("params").get<int64_t>());
    EXPECT_EQ(g.macs(), c.j->at("macs").get<int64_t>());
    EXPECT_EQ(g.output_shape(), c.j->at("output_shape").get<Shape>());
    EXPECT_EQ(g.input_name(), "input");
  }
}

TEST(ZooReference, TensorNamesAndShapesMatchStateDict) {
  REQUIRE_REFERENCE();
  for (const auto& c : reference_configs()) {
    SCOPED_TRACE(c.label);
    std::map<std::string, std::vector<int64_t>> expected, actual;
    for (const auto& [k, v] : c.j->at("state").items()) expected[k] = v.get<std::vector<int64_t>>();
    GraphModule m(build_model(c.model, c.opt));
    auto keep = [](const std::string& k) {
      const std::string suffix = "num_batches_tracked";
      return k.size() < suffix.size() || k.compare(k.size() - suffix.size(), suffix.size(), suffix);
    };
    for (const auto& p : m->named_parameters(true))
      if (keep(p.key())) actual[p.key()] = p.value().sizes().vec();
    for (const auto& b : m->named_buffers(true))
      if (keep(b.key())) actual[b.key()] = b.value().sizes().vec();
    std::string diff;
    for (const auto& [k, s] : expected) {
      auto it = actual.find(k);
      if (it == actual.end())
        diff += " missing " + k + ";";
      else if (it->second != s)
        diff += " " + k + " is " + shape_str(it->second) + " not " + shape_str(s) + ";";
    }
    for (const auto& [k, s] : actual)
      if (!expected.count(k)) diff += " unexpected " + k + ";";
    EXPECT_TRUE(diff.empty()) << diff;
  }
}

// ---------------------------------------------------------------- forward and counts

TEST(ZooForward, EveryModelGivesFiniteLogitsAtBatch2) {
  torch::manual_seed(0);
  torch::NoGradGuard ng;
  for (const auto& name : model_names()) {
    for (const auto& s : kShapes) {
      SCOPED_TRACE(name + " " + shape_str(s));
      ModelOptions opt = options(s);
      opt.num_classes = 7;
      GraphModule m(build_model(name, opt));
      m->eval();
      std::vector<int64_t> in{2};
      in.insert(in.end(), s.begin(), s.end());
      auto y = m->forward(torch::randn(in));
      EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{2, 7}));
      EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
      // The two samples differ, so the logits must too (catches a constant output).
      EXPECT_GT((y[0] - y[1]).abs().max().item<float>(), 0.0f);
    }
  }
}

// relu -> max_pool runs as max_pool -> relu inside GraphModule; tapping the
// relu keeps the written order, so both orders are compared here, in value
// and in every parameter's gradient.
TEST(ZooForward, ReluBeforeMaxPoolReorderedWithSameValuesAndGradients) {
  for (const std::string name : {"lenet5", "vgg-small"}) {
    SCOPED_TRACE(name);
    torch::manual_seed(5);
    GraphModule m(build_model(name, options({1, 28, 28})));
    m->train();
    std::vector<std::string> relus;
    for (const auto& n : m->graph().nodes())
      if (n.op == OpKind::kReLU) {
        auto r = m->graph().consumers(n.name);
        if (r.size() == 1 && m->graph().node(r[0]).op == OpKind::kMaxPool) relus.push_back(n.name);
      }
    ASSERT_FALSE(relus.empty());
    torch::Tensor x = torch::randn({8, 1, 28, 28});
    auto run = [&](bool tap) {
      for (auto& p : m->parameters()) p.mutable_grad().reset();
      TensorMap out;
      torch::Tensor y = tap ? m->forward(x, relus, out) : m->forward(x);
      (y * torch::linspace(-1, 1, y.numel()).view(y.sizes())).sum().backward();
      std::vector<torch::Tensor> g{y.detach()};
      for (auto& p : m->parameters()) g.push_back(p.grad().clone());
      return g;
    };
    auto reordered = run(false), written = run(true);
    ASSERT_EQ(reordered.size(), written.size());
    for (size_t i = 0; i < reordered.size(); ++i)
      EXPECT_TRUE(torch::allclose(reordered[i], written[i], 1e-5, 1e-6)) << "tensor " << i;
    EXPECT_GT(written[1].abs().sum().item<float>(), 0.0f);
  }
}

// Channels-last execution (GraphModule::set_channels_last, the Trainer's
// default) gives the contiguous run's outputs and gradients, in training mode
// (batch statistics, in-place ReLUs, residual adds, 1x1 convs, the flatten
// before a linear layer) and in eval mode, on both conv kernels.
TEST(ZooForward, ChannelsLastGivesTheSameValuesAndGradients) {
  {  // grouped convs keep NCHW (see GraphModuleImpl::set_channels_last)
    GraphModule mb(build_model("mobilenetv2", options({1, 28, 28}, 0.5)));
    mb->set_channels_last(true);
    EXPECT_FALSE(mb->channels_last());
  }
  // resnet8 at width 0.25: 1x1 stride-2 shortcut convs of 4 -> 8 and 8 -> 16
  // channels, whose NHWC weight gradient LibTorch 1.13 got wrong (see run()).
  const std::vector<std::pair<std::string, double>> cases = {
      {"lenet5", 1.0}, {"resnet8", 1.0}, {"resnet8", 0.25}, {"vgg-small", 1.0}};
  for (const auto& [name, width] : cases) {
    SCOPED_TRACE(name + " width " + std::to_string(width));
    torch::manual_seed(6);
    GraphModule m(build_model(name, options({1, 28, 28}, width)));
    torch::Tensor x = torch::randn({8, 1, 28, 28});
    auto run = [&](bool cl, bool train) {
      m->set_channels_last(cl);
      m->train(train);
      for (auto& p : m->parameters()) p.mutable_grad().reset();
      torch::Tensor y = m->forward(x);
      std::vector<torch::Tensor> g{y.detach().contiguous()};
      if (train) {
        (y * torch::linspace(-1, 1, y.numel()).view(y.sizes())).sum().backward();
        for (auto& p : m->parameters()) {
          // What FusedSGD's one-pass update needs: the same element order.
          for (int64_t d = 0; d < p.dim(); ++d)
            if (p.size(d) > 1) EXPECT_EQ(p.grad().stride(d), p.stride(d)) << "dim " << d;
          g.push_back(p.grad().contiguous());
        }
      }
      return g;
    };
    for (bool train : {true, false}) {
      // Batch statistics move the running buffers in training mode: restore them between runs.
      TensorMap saved;
      for (const auto& [k, v] : m->state()) saved[k] = v.clone();
      auto plain = run(false, train);
      m->load_state(saved);
      auto cl = run(true, train);
      m->load_state(saved);
      ASSERT_EQ(plain.size(), cl.size());
      for (size_t i = 0; i < plain.size(); ++i)
        EXPECT_TRUE(torch::allclose(plain[i], cl[i], 1e-4, 1e-5))
            << (train ? "train" : "eval") << " tensor " << i << " max diff "
            << (plain[i] - cl[i]).abs().max().item<float>();
    }
    // It really ran in that order: the output of a conv with more than one
    // input channel is NHWC (a 1-channel tensor is NCHW and NHWC at once).
    std::string conv;
    for (const auto& n : m->graph().nodes())
      if (n.op == OpKind::kConv2d && conv.empty() && m->node_module(n.name).weight.size(1) > 1)
        conv = n.name;
    ASSERT_FALSE(conv.empty());
    TensorMap out;
    m->forward(x, {conv}, out);
    EXPECT_TRUE(out.at(conv).is_contiguous(at::MemoryFormat::ChannelsLast));
    m->set_channels_last(false);
    for (auto& p : m->parameters()) EXPECT_TRUE(p.is_contiguous());
    // A weight transform (mask, quantizer) switches the order back to NCHW,
    // and a graph that has one stays NCHW (see set_channels_last).
    m->set_channels_last(true);
    ASSERT_TRUE(m->channels_last());
    m->set_weight_transform(conv, std::make_shared<MaskTransformImpl>(torch::ones_like(m->node_module(conv).weight)));
    EXPECT_FALSE(m->channels_last());
    for (auto& p : m->parameters()) EXPECT_TRUE(p.is_contiguous());
    m->set_channels_last(true);
    EXPECT_FALSE(m->channels_last());
  }
}

TEST(ZooForward, TrainModeWithDropoutRuns) {
  torch::manual_seed(0);
  for (const std::string name : {"vgg-small", "mobilenetv2", "resnet8"}) {
    SCOPED_TRACE(name);
    Graph g = build_model(name, options({3, 32, 32}, 0.5, 20, 10, 0.3));
    const std::string drop = name == "mobilenetv2" ? "classifier.0" : "dropout";
    ASSERT_TRUE(g.contains(drop));
    EXPECT_EQ(g.node(drop).as<DropoutAttrs>().p, 0.3);
    GraphModule m(g);
    m->train();
    auto y = m->forward(torch::randn({2, 3, 32, 32}));
    EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{2, 10}));
    EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  }
}

TEST(ZooCounts, Resnet20IsThePaperSize) {
  Graph g = build_model("resnet20", options({3, 32, 32}));
  EXPECT_GE(g.num_params(), 260000);
  EXPECT_LE(g.num_params(), 280000);
  // Option B projections (2 x (1x1 conv + BN)); option A would give 269,722.
  EXPECT_EQ(g.num_params(), 272474);
  EXPECT_EQ(g.macs(), 40813184);
  EXPECT_TRUE(g.contains("layer2.0.shortcut.0"));
  EXPECT_TRUE(g.contains("layer3.0.shortcut.1"));
  EXPECT_FALSE(g.contains("layer1.0.shortcut.0"));  // 16 -> 16, stride 1: identity
  EXPECT_FALSE(g.contains("layer2.1.shortcut.0"));
  EXPECT_EQ(g.node("layer3.2.relu2").shape, (Shape{64, 8, 8}));
}

TEST(ZooCounts, NamedResnetsEqualResnetWithDepth) {
  for (int64_t depth : {8, 14, 20, 32, 56}) {
    ModelOptions opt = options({3, 32, 32}, 1.0, depth);
    Graph named = build_model("resnet" + std::to_string(depth), options({3, 32, 32}));
    EXPECT_TRUE(named == build_model("resnet", opt)) << depth;
  }
  // The named variants ignore opt.depth.
  EXPECT_TRUE(build_model("resnet8", options({3, 32, 32}, 1.0, 56)) ==
              build_model("resnet", options({3, 32, 32}, 1.0, 8)));
}

TEST(ZooCounts, MobileNetV2CifarLayout) {
  Graph g = build_model("mobilenetv2", options({3, 32, 32}));
  EXPECT_EQ(g.num_params(), 2236682);  // torchvision's mobilenet_v2(num_classes=10)
  // Stem stride 1 and the c=24 stage stride 1: 8x downsampling in total.
  EXPECT_EQ(g.node("features.0.2").shape, (Shape{32, 32, 32}));
  EXPECT_EQ(g.node("features.3.conv.3").shape, (Shape{24, 32, 32}));
  EXPECT_EQ(g.node("features.18.2").shape, (Shape{1280, 4, 4}));
  // Residual adds: one per repeated block, n - 1 per setting = 0+1+2+3+2+2+0.
  int adds = 0;
  for (const auto& n : g.nodes()) adds += n.op == OpKind::kAdd;
  EXPECT_EQ(adds, 10);
  EXPECT_EQ(g.node("features.2.conv.1.0").as<Conv2dAttrs>().groups, 96);  // depthwise
  // The last channel count is not scaled below 1280.
  EXPECT_EQ(build_model("mobilenetv2", options({3, 32, 32}, 0.5)).node("features.18.0").shape[0],
            1280);
}

TEST(ZooCounts, LeNet5PadsSmallInputs) {
  Graph a = build_model("lenet5", options({1, 28, 28}));
  Graph b = build_model("lenet5", options({3, 32, 32}));
  EXPECT_EQ(a.node("conv1").as<Conv2dAttrs>().padding, (Pair{2, 2}));
  EXPECT_EQ(b.node("conv1").as<Conv2dAttrs>().padding, (Pair{0, 0}));
  EXPECT_EQ(a.node("flatten").shape, (Shape{400}));
  EXPECT_EQ(b.node("flatten").shape, (Shape{400}));
  EXPECT_EQ(a.num_params(), 61706);
}

// ---------------------------------------------------------------- errors

namespace {
// The ValueError message of build_model(name, opt), or "" if it did not throw one.
std::string error_of(const std::string& name, const ModelOptions& opt) {
  try {
    build_model(name, opt);
  } catch (const ValueError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(ZooErrors, UnknownNameListsKnownNames) {
  const std::string msg = error_of("resnet21x", ModelOptions{});
  EXPECT_NE(msg.find("resnet21x"), std::string::npos) << msg;
  for (const auto& name : model_names()) EXPECT_NE(msg.find(name), std::string::npos) << msg;
}

TEST(ZooErrors, BadOptionsNameTheOptionAndValue) {
  std::string msg = error_of("resnet", options({3, 32, 32}, 1.0, 21));
  EXPECT_NE(msg.find("depth"), std::string::npos) << msg;
  EXPECT_NE(msg.find("21"), std::string::npos) << msg;
  msg = error_of("resnet", options({3, 32, 32}, 1.0, 2));
  EXPECT_NE(msg.find("depth"), std::string::npos) << msg;

  for (const std::string name : {"resnet20", "mobilenetv2", "vgg-small"}) {
    msg = error_of(name, options({3, 32, 32}, 0.0));
    EXPECT_NE(msg.find("width"), std::string::npos) << name << ": " << msg;
    EXPECT_NE(msg.find("0"), std::string::npos) << name << ": " << msg;
  }
  msg = error_of("resnet20", options({3, 32, 32}, -1.0));
  EXPECT_NE(msg.find("width must be > 0, got -1"), std::string::npos) << msg;

  msg = error_of("mlp", options({1, 28, 28}, 1.0, 20, 1));
  EXPECT_NE(msg.find("num_classes"), std::string::npos) << msg;
  msg = error_of("lenet5", options({1, 28, 28}, 1.0, 20, 10, 1.0));
  EXPECT_NE(msg.find("dropout"), std::string::npos) << msg;
}

TEST(ZooErrors, InputTooSmallOrWrongRank) {
  std::string msg = error_of("lenet5", options({1, 10, 10}));
  EXPECT_NE(msg.find("input_shape"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[1, 10, 10]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("too small"), std::string::npos) << msg;
  EXPECT_EQ(error_of("lenet5", options({1, 12, 12})), "");  // the smallest that fits
  EXPECT_EQ(error_of("lenet5", options({1, 11, 12})).find("lenet5"), 0u);
  msg = error_of("vgg-small", options({3, 7, 32}));
  EXPECT_NE(msg.find("too small"), std::string::npos) << msg;
  msg = error_of("resnet20", options({784}));
  EXPECT_NE(msg.find("[C, H, W]"), std::string::npos) << msg;
  msg = error_of("mobilenetv2", options({3, 0, 32}));
  EXPECT_NE(msg.find("input_shape"), std::string::npos) << msg;
  EXPECT_EQ(error_of("mlp", options({784})), "");  // mlp takes any shape
}

TEST(ZooErrors, RegisterRejectsDuplicates) {
  EXPECT_THROW(register_model("mlp", build_mlp), ValueError);
  EXPECT_THROW(register_model("", build_mlp), ValueError);
}
