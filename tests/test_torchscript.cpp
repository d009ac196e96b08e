// TorchScript import (models written by PyTorch Python) and export (read back by
// PyTorch Python). Python helpers: tests/py/ts_*.py, run with /usr/bin/python3.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/nn/torchscript.h"
#include "test_paths.h"

using namespace nnopt;

namespace {

constexpr double kTol = 1e-5;
const char* kPython = "/usr/bin/python3";

std::string tmp_root() {
  const char* env = std::getenv("NNOPT_TEST_TMP");
  return env && *env ? env : "/tmp";
}

// This process's scratch folder; removed when the test program ends.
std::string tmp_dir() {
  static std::string dir = [] {
    std::string d = path_join(tmp_root(), "torchscript_test_" + std::to_string(::getpid()));
    make_dirs(d);
    struct Cleanup : ::testing::Environment {
      explicit Cleanup(std::string d) : dir(std::move(d)) {}
      void TearDown() override {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
      }
      std::string dir;
    };
    ::testing::AddGlobalTestEnvironment(new Cleanup(d));
    return d;
  }();
  return dir;
}

bool python_has_torch() {
  static const bool ok =
      std::system((std::string(kPython) + " -c 'import torch' >/dev/null 2>&1").c_str()) == 0;
  return ok;
}

// Runs tests/py/<script> with arguments; true on exit status 0.
bool run_python(const std::string& script, const std::vector<std::string>& args) {
  std::string cmd = std::string(kPython) + " '" NNOPT_SOURCE_DIR "/tests/py/" + script + "'";
  for (const auto& a : args) cmd += " '" + a + "'";
  return std::system(cmd.c_str()) == 0;
}

// Tensor file shared with tests/py/ts_tensor_io.py: i64 ndim, i64 dims, f32 data.
void write_tensor(const std::string& path, const torch::Tensor& t) {
  auto c = t.detach().to(torch::kFloat).contiguous();
  std::string bytes;
  int64_t nd = c.dim();
  bytes.append(reinterpret_cast<const char*>(&nd), 8);
  for (auto d : c.sizes()) bytes.append(reinterpret_cast<const char*>(&d), 8);
  bytes.append(reinterpret_cast<const char*>(c.data_ptr<float>()), c.numel() * 4);
  write_file_atomic(path, bytes);
}

torch::Tensor read_tensor(const std::string& path) {
  std::string bytes = read_file(path);
  EXPECT_GE(bytes.size(), 8u);
  int64_t nd = 0;
  std::memcpy(&nd, bytes.data(), 8);
  std::vector<int64_t> dims(nd);
  std::memcpy(dims.data(), bytes.data() + 8, 8 * nd);
  size_t off = 8 + 8 * nd;
  auto t = torch::empty(dims, torch::kFloat);
  EXPECT_EQ(bytes.size() - off, static_cast<size_t>(t.numel()) * 4) << path;
  std::memcpy(t.data_ptr<float>(), bytes.data() + off, t.numel() * 4);
  return t;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  EXPECT_EQ(a.sizes(), b.sizes());
  return (a - b).abs().max().item<double>();
}

std::set<std::string> node_names(const Graph& g) {
  std::set<std::string> s;
  for (const auto& n : g.nodes()) s.insert(n.name);
  return s;
}

int count_op(const Graph& g, OpKind op) {
  int k = 0;
  for (const auto& n : g.nodes()) k += n.op == op;
  return k;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// ---------------------------------------------------------------- import

// Python writes the models once for the whole suite.
class TorchScriptImport : public ::testing::Test {
 protected:
  // ctest runs each test in its own process, so the models are cached in a
  // folder named by a hash of the generating scripts: written to a private
  // folder, then renamed into place (the first process to finish wins).
  static void SetUpTestSuite() {
    if (!python_has_torch()) return;
    const std::string py = NNOPT_SOURCE_DIR "/tests/py/";
    size_t h = std::hash<std::string>()(read_file(py + "ts_make_models.py") +
                                        read_file(py + "ts_tensor_io.py"));
    dir_ = path_join(tmp_root(), str_cat("torchscript_models_", std::hex, h));
    if (!path_exists(path_join(dir_, "meta.json"))) {
      std::string mine = path_join(tmp_dir(), "models");
      ok_ = run_python("ts_make_models.py", {mine});
      if (!ok_) return;
      std::error_code ec;
      std::filesystem::rename(mine, dir_, ec);  // fails if another process was first
    }
    ok_ = path_exists(path_join(dir_, "meta.json"));
    if (ok_) meta_ = nlohmann::json::parse(read_file(path_join(dir_, "meta.json")));
  }
  void SetUp() override {
    if (!python_has_torch()) GTEST_SKIP() << "python3 with torch is not available";
    ASSERT_TRUE(ok_) << "tests/py/ts_make_models.py failed";
  }

  // Imports NAME_<kind>.pt, runs it in eval mode and compares with PyTorch.
  ImportedModel check(const std::string& name, const std::string& kind) {
    SCOPED_TRACE(name + "_" + kind);
    Shape shape = meta_[name]["input_shape"].get<Shape>();
    ImportedModel m = import_torchscript(path_join(dir_, name + "_" + kind + ".pt"), shape);
    EXPECT_EQ(m.graph.input_shape(), shape);
    EXPECT_EQ(m.graph.num_params(), meta_[name]["params"].get<int64_t>());
    std::set<std::string> keys;
    for (const auto& [k, t] : m.tensors) keys.insert(k);
    auto want = meta_[name]["state_keys"].get<std::set<std::string>>();
    EXPECT_EQ(keys, want) << "tensor names must equal PyTorch's state_dict keys";

    GraphModule gm(m.graph);
    gm->load_state(m.tensors);
    gm->eval();
    torch::NoGradGuard ng;
    auto x = read_tensor(path_join(dir_, name + "_input.bin"));
    auto want_y = read_tensor(path_join(dir_, name + "_expected.bin"));
    EXPECT_LE(max_abs_diff(gm->forward(x), want_y), kTol);
    return m;
  }

  static std::string dir_;
  static bool ok_;
  static nlohmann::json meta_;
};
std::string TorchScriptImport::dir_;
bool TorchScriptImport::ok_ = false;
nlohmann::json TorchScriptImport::meta_;

TEST_F(TorchScriptImport, LeNetFunctionalOpsAndViewFlatten) {
  for (const char* kind : {"script", "trace"}) {
    ImportedModel m = check("lenet", kind);
    const Graph& g = m.graph;
    // F.relu inline at the top level: named by op, made unique.
    for (const char* n : {"conv1", "conv2", "fc1", "fc2", "fc3", "relu", "relu_1", "relu_2",
                          "relu_3", "drop", "max_pool2d", "avg_pool2d", "view"})
      EXPECT_TRUE(g.contains(n)) << kind << ": no node '" << n << "'";
    EXPECT_EQ(g.node("view").op, OpKind::kFlatten);
    EXPECT_EQ(g.node("drop").op, OpKind::kDropout);
    EXPECT_DOUBLE_EQ(g.node("drop").as<DropoutAttrs>().p, 0.3);
    EXPECT_EQ(g.node("conv1").as<Conv2dAttrs>().padding, (Pair{2, 2}));
    EXPECT_EQ(g.output(), "fc3");
  }
}

TEST_F(TorchScriptImport, ResNetBlocksByModulePath) {
  ImportedModel s = check("resnet", "script");
  ImportedModel t = check("resnet", "trace");
  const Graph& g = s.graph;
  for (const char* n : {"conv1", "bn1", "relu", "maxpool", "layer1.0.conv1", "layer1.0.bn1",
                        "layer1.0.relu", "layer1.0.relu_1", "layer1.0.add", "layer2.0.downsample.0",
                        "layer2.0.downsample.1", "layer2.1.conv2", "avgpool", "flatten", "fc"})
    EXPECT_TRUE(g.contains(n)) << "no node '" << n << "' in\n" << g.summary();
  EXPECT_EQ(g.node("layer1.0.add").op, OpKind::kAdd);
  EXPECT_EQ(g.node("layer1.0.add").inputs, (std::vector<std::string>{"layer1.0.bn2", "maxpool"}));
  EXPECT_EQ(g.node("layer2.0.add").inputs,
            (std::vector<std::string>{"layer2.0.bn2", "layer2.0.downsample.1"}));
  EXPECT_EQ(g.node("layer2.0.downsample.0").as<Conv2dAttrs>().stride, (Pair{2, 2}));
  EXPECT_EQ(g.node("avgpool").op, OpKind::kGlobalAvgPool);
  EXPECT_EQ(g.node("bn1").as<BatchNormAttrs>().eps, 1e-5);
  EXPECT_EQ(s.tensors.at("bn1.num_batches_tracked").item<int64_t>(), 7);
  // Scripting and tracing give the same graph.
  EXPECT_EQ(s.graph.to_json(), t.graph.to_json());
}

TEST_F(TorchScriptImport, MobileNetDepthwiseRelu6HardswishCat) {
  ImportedModel s = check("mobilenet", "script");
  ImportedModel t = check("mobilenet", "trace");
  const Graph& g = s.graph;
  const auto& dw = g.node("features.0.conv.3").as<Conv2dAttrs>();
  EXPECT_EQ(dw.groups, 16);
  EXPECT_EQ(dw.in_channels, 16);
  EXPECT_EQ(g.node("side").as<Conv2dAttrs>().groups, 4);
  EXPECT_EQ(g.node("features.0.conv.2").op, OpKind::kReLU6);  // nn.ReLU6 -> hardtanh(0, 6)
  EXPECT_EQ(g.node("relu6").op, OpKind::kReLU6);              // F.relu6
  EXPECT_EQ(g.node("stem.2").op, OpKind::kHardswish);
  EXPECT_EQ(g.node("hardswish").op, OpKind::kHardswish);
  EXPECT_EQ(g.node("cat").op, OpKind::kConcat);
  EXPECT_EQ(g.node("features.0.add").op, OpKind::kAdd);  // residual inside the block
  EXPECT_EQ(g.node("pool").op, OpKind::kGlobalAvgPool);
  EXPECT_EQ(g.node("flatten").op, OpKind::kFlatten);
  EXPECT_EQ(g.node("classifier.0").op, OpKind::kDropout);
  EXPECT_EQ(count_op(g, OpKind::kAdd), 2);
  EXPECT_EQ(s.graph.to_json(), t.graph.to_json());
}

TEST_F(TorchScriptImport, AddmmAndMatmulAddBecomeLinear) {
  for (const char* kind : {"script", "trace"}) {
    ImportedModel m = check("mlp", kind);
    EXPECT_EQ(m.graph.node("fc1").op, OpKind::kLinear);
    EXPECT_TRUE(m.graph.node("fc2").as<LinearAttrs>().bias) << kind;
    EXPECT_EQ(count_op(m.graph, OpKind::kReLU), 1) << kind;  // clamp(min=0)
    EXPECT_EQ(m.graph.size(), 4u) << kind << "\n" << m.graph.summary();
  }
}

TEST_F(TorchScriptImport, ModuleHelperHasWeightsLoaded) {
  GraphModule gm = import_torchscript_module(path_join(dir_, "resnet_script.pt"), {3, 16, 16});
  EXPECT_FALSE(gm->is_training());
  torch::NoGradGuard ng;
  auto y = gm->forward(read_tensor(path_join(dir_, "resnet_input.bin")));
  EXPECT_LE(max_abs_diff(y, read_tensor(path_join(dir_, "resnet_expected.bin"))), kTol);
}

TEST_F(TorchScriptImport, UnsupportedOpsAreAllListedWithTheirPlace) {
  std::string path = path_join(dir_, "unsupported.pt");
  EXPECT_THROW(import_torchscript(path, {1, 8, 8}), GraphError);
  std::string msg = error_of([&] { import_torchscript(path, {1, 8, 8}); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("aten::sigmoid in 'gate'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("aten::mul"), std::string::npos) << msg;
  EXPECT_NE(msg.find("aten::gelu in forward"), std::string::npos) << msg;
  EXPECT_NE(msg.find("ts_make_models.py:"), std::string::npos) << msg;  // source line
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
}

TEST_F(TorchScriptImport, SharedWeightsAndTupleOutputsAreGraphErrors) {
  std::string shared = path_join(dir_, "shared.pt");
  EXPECT_THROW(import_torchscript(shared, {2, 8, 8}), GraphError);
  std::string msg = error_of([&] { import_torchscript(shared, {2, 8, 8}); });
  EXPECT_NE(msg.find("module 'conv' is called more than once"), std::string::npos) << msg;
  std::string two = path_join(dir_, "two_outputs.pt");
  EXPECT_THROW(import_torchscript(two, {1, 8, 8}), GraphError);
  msg = error_of([&] { import_torchscript(two, {1, 8, 8}); });
  EXPECT_NE(msg.find("must return one tensor"), std::string::npos) << msg;
}

TEST_F(TorchScriptImport, WrongInputShapeIsAGraphError) {
  std::string msg = error_of([&] {
    import_torchscript(path_join(dir_, "lenet_script.pt"), {3, 28, 28});
  });
  EXPECT_NE(msg.find("conv1"), std::string::npos) << msg;
  EXPECT_THROW(import_torchscript(path_join(dir_, "lenet_script.pt"), {1, 20, 20}), GraphError);
}

// ---------------------------------------------------------------- export

// conv+bn+relu+maxpool, a residual add named like its block, depthwise conv,
// relu6, hardswish, a non-affine bn, avg pool, concat, global pool, flatten,
// dropout, linear.
Graph export_graph() {
  Graph g;
  g.input("x", {3, 16, 16});
  g.conv2d("stem.conv", "x", 8, 3, 1, 1);
  g.batch_norm("stem.bn", "stem.conv");
  g.unary("stem.relu", OpKind::kReLU, "stem.bn");
  g.max_pool("stem.pool", "stem.relu", 2, 2);  // [8, 8, 8]
  g.conv2d("block.0.conv1", "stem.pool", 16, 1, 1, 0, 1, /*bias=*/true);
  g.batch_norm("block.0.bn1", "block.0.conv1");
  g.unary("block.0.act1", OpKind::kReLU6, "block.0.bn1");
  g.conv2d("block.0.dw", "block.0.act1", 16, 3, 1, 1, /*groups=*/16);
  g.batch_norm("block.0.bn2", "block.0.dw");
  g.unary("block.0.act2", OpKind::kHardswish, "block.0.bn2");
  g.conv2d("block.0.project", "block.0.act2", 8, 1);
  g.batch_norm("block.0.bn3", "block.0.project");
  g.add_op("block.0", {"block.0.bn3", "stem.pool"});  // a node that is also a container
  g.conv2d("branch.conv", "block.0", 4, 3, 2, 1);
  BatchNormAttrs plain;
  plain.num_features = 4;
  plain.affine = false;
  plain.eps = 1e-3;
  plain.momentum = 0.01;
  g.add("branch.bn", OpKind::kBatchNorm, plain, {"branch.conv"});
  PoolAttrs ap;
  ap.kernel = {3, 3};
  ap.stride = {1, 1};
  ap.padding = {1, 1};
  ap.count_include_pad = false;
  g.add("branch.pool", OpKind::kAvgPool, ap, {"branch.bn"});  // [4, 4, 4]
  g.max_pool("main_pool", "block.0", 2, 2);                   // [8, 4, 4]
  g.concat("cat", {"main_pool", "branch.pool"});              // [12, 4, 4]
  g.add("gap", OpKind::kGlobalAvgPool, NoAttrs{}, {"cat"});
  g.flatten("flatten", "gap");
  g.dropout("head.drop", "flatten", 0.25);
  g.linear("head.fc", "head.drop", 10);
  return g;
}

GraphModule export_model() {
  torch::manual_seed(0);
  GraphModule m(export_graph());
  torch::NoGradGuard ng;
  for (const auto& n : m->graph().nodes()) {
    if (n.op != OpKind::kBatchNorm) continue;
    auto& nm = m->node_module(n.name);
    nm.running_mean.normal_(0, 0.5);
    nm.running_var.uniform_(0.5, 2.0);
    nm.num_batches_tracked.fill_(3);
    if (nm.weight.defined()) {
      nm.weight.normal_(1, 0.3);
      nm.bias.normal_(0, 0.3);
    }
  }
  for (const auto& n : m->graph().nodes())
    if (n.op == OpKind::kConv2d && m->node_module(n.name).bias.defined())
      m->node_module(n.name).bias.normal_(0, 0.1);
  m->eval();
  return m;
}

TEST(TorchScriptExport, PyTorchLoadsItAndGivesTheSameOutput) {
  if (!python_has_torch()) GTEST_SKIP() << "python3 with torch is not available";
  GraphModule m = export_model();
  std::string dir = path_join(tmp_dir(), "export");
  std::string model = path_join(dir, "model.pt");
  export_torchscript(m, model);
  EXPECT_FALSE(path_exists(model + ".tmp." + std::to_string(::getpid())));
  torch::manual_seed(1);
  auto x = torch::randn({3, 3, 16, 16});
  write_tensor(path_join(dir, "x.bin"), x);
  ASSERT_TRUE(run_python(
      "ts_run_exported.py",
      {model, path_join(dir, "x.bin"), path_join(dir, "y.bin"), path_join(dir, "keys.txt")}));
  torch::NoGradGuard ng;
  auto want = m->forward(x);
  EXPECT_LE(max_abs_diff(read_tensor(path_join(dir, "y.bin")), want), kTol);
  // state_dict keys are nnopt's tensor names.
  std::set<std::string> keys;
  std::istringstream in(read_file(path_join(dir, "keys.txt")));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) keys.insert(line);
  std::set<std::string> mine;
  for (const auto& [k, t] : m->state()) mine.insert(k);
  EXPECT_EQ(keys, mine);
}

TEST(TorchScriptExport, RoundTripKeepsGraphNamesAndOutputs) {
  GraphModule m = export_model();
  std::string path = path_join(tmp_dir(), "roundtrip.pt");
  export_torchscript(m, path);
  ImportedModel back = import_torchscript(path, {3, 16, 16});
  EXPECT_EQ(back.graph.to_json(), m->graph().to_json());
  auto state = m->state();
  ASSERT_EQ(back.tensors.size(), state.size());
  for (const auto& [k, t] : state) {
    ASSERT_TRUE(back.tensors.count(k)) << k;
    EXPECT_TRUE(torch::equal(back.tensors.at(k), t)) << k;
  }
  GraphModule again = import_torchscript_module(path, {3, 16, 16});
  torch::NoGradGuard ng;
  auto x = torch::randn({2, 3, 16, 16});
  EXPECT_LE(max_abs_diff(again->forward(x), m->forward(x)), kTol);
}

struct Doubler : TransformImpl {
  torch::Tensor forward(const torch::Tensor& x) override { return x * 2; }
  std::string describe() const override { return "doubler"; }
};

TEST(TorchScriptExport, TransformsAreRejectedByNode) {
  GraphModule m = export_model();
  std::string path = path_join(tmp_dir(), "transform.pt");
  m->set_weight_transform("block.0.dw", std::make_shared<Doubler>());
  EXPECT_THROW(export_torchscript(m, path), ValueError);
  EXPECT_NE(error_of([&] { export_torchscript(m, path); }).find("'block.0.dw'"), std::string::npos);
  m->set_weight_transform("block.0.dw", nullptr);
  m->set_activation_transform("stem.relu", std::make_shared<Doubler>());
  EXPECT_NE(error_of([&] { export_torchscript(m, path); }).find("'stem.relu'"), std::string::npos);
  EXPECT_FALSE(path_exists(path));
}

// ---------------------------------------------------------------- files

TEST(TorchScriptFiles, MissingTextAndTruncatedFilesAreFileErrors) {
  std::string missing = path_join(tmp_dir(), "no_such_model.pt");
  EXPECT_THROW(import_torchscript(missing, {1}), FileError);
  EXPECT_NE(error_of([&] { import_torchscript(missing, {1}); }).find(missing), std::string::npos);

  std::string text = path_join(tmp_dir(), "model.txt");
  write_file_atomic(text, "this is not a TorchScript archive\n");
  EXPECT_THROW(import_torchscript(text, {1}), FileError);
  EXPECT_NE(error_of([&] { import_torchscript(text, {1}); }).find(text), std::string::npos);

  GraphModule m = export_model();
  std::string good = path_join(tmp_dir(), "good.pt");
  export_torchscript(m, good);
  std::string bytes = read_file(good);
  std::string cut = path_join(tmp_dir(), "truncated.pt");
  write_file_atomic(cut, bytes.substr(0, bytes.size() / 2));
  EXPECT_THROW(import_torchscript(cut, {3, 16, 16}), FileError);
  EXPECT_NE(error_of([&] { import_torchscript(cut, {3, 16, 16}); }).find(cut), std::string::npos);
}

}  // namespace
