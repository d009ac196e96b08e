// Tests for post-training quantization: the PTQ pipeline and empirical bias
// correction, cross-layer equalization and data-free quantization (DFQ),
// AdaRound, mixed precision, and `nnopt quantize`.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <map>
#include <string>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/int8.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/quant/adaround.h"
#include "nnopt/quant/dfq.h"
#include "nnopt/quant/equalize.h"
#include "nnopt/quant/fake_quant.h"
#include "nnopt/quant/mixed_precision.h"
#include "nnopt/quant/ptq.h"
#include "nnopt/train/trainer.h"
#include "test_util.h"

namespace nnopt {
namespace {

using test::temp_dir;

// conv-bn-relu x3 -> flatten -> fc on [1, 28, 28] (the shape of the
// CLI's synthetic dataset).
Graph tiny_cnn() {
  Graph g;
  std::string x = g.input("input", {1, 28, 28});
  x = g.conv2d("conv1", x, 8, 3, 2, 1);
  x = g.batch_norm("bn1", x);
  x = g.unary("relu1", OpKind::kReLU, x);
  x = g.conv2d("conv2", x, 16, 3, 2, 1);
  x = g.batch_norm("bn2", x);
  x = g.unary("relu2", OpKind::kReLU, x);
  x = g.conv2d("conv3", x, 16, 3, 1, 1);
  x = g.batch_norm("bn3", x);
  x = g.unary("relu3", OpKind::kReLU, x);
  x = g.flatten("flatten", x);  // [16, 7, 7] -> [784]
  g.linear("fc", x, 10);
  return g;
}

struct Trained {
  Dataset train, test;
  TensorMap weights;
  Trained() {
    train = make_synthetic(2048, {1, 28, 28}, 10, 1);
    test = make_synthetic(512, {1, 28, 28}, 10, 2);
    torch::manual_seed(0);
    GraphModule m(tiny_cnn());
    Trainer t(m, TrainOptions(3).batch_size(64).lr(0.05).weight_decay(0).progress("off").seed(0));
    t.fit(train);
    weights = m->state();
  }
  GraphModule model() const {
    GraphModule m(tiny_cnn());
    m->load_state(weights);
    m->eval();
    return m;
  }
};
const Trained& trained() {
  static Trained* t = new Trained();
  return *t;
}

torch::Tensor logits(GraphModule& m, const torch::Tensor& x) {
  torch::NoGradGuard ng;
  m->eval();
  return m->forward(x);
}
double accuracy(GraphModule& m, const Dataset& d) {
  return logits(m, d.images).argmax(1).eq(d.labels).to(torch::kFloat64).mean().item<double>();
}
double agreement(const torch::Tensor& a, const torch::Tensor& b) {
  return a.argmax(1).eq(b.argmax(1)).to(torch::kFloat64).mean().item<double>();
}

// Random batch-norm statistics so that equalization has unequal ranges to fix.
void randomize_bn(GraphModule& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard ng;
  for (const Node& n : m->graph().nodes()) {
    if (n.op != OpKind::kBatchNorm) continue;
    auto& b = m->node_module(n.name);
    const int64_t c = b.running_mean.size(0);
    b.running_mean.copy_(torch::randn({c}) * 0.3);
    b.running_var.copy_(torch::rand({c}) * 4 + 0.05);
    b.weight.copy_(torch::rand({c}) * 3 + 0.05);
    b.bias.copy_(torch::randn({c}) * 0.5);
  }
}

// ---------------------------------------------------------------- PTQ

TEST(Ptq, W8A8PipelineCloseToFloatAndLowers) {
  const auto& T = trained();
  GraphModule fp = T.model();
  const double fp_acc = accuracy(fp, T.test);
  ASSERT_GT(fp_acc, 0.5) << "the tiny model did not learn";
  PtqResult r = run_ptq(fp, T.train, PtqOptions().calib_batches(4));
  EXPECT_EQ(fp->graph(), tiny_cnn());  // the input model is untouched
  EXPECT_FALSE(r.model->graph().contains("bn1"));  // folded
  const double q_acc = accuracy(r.model, T.test);
  EXPECT_GT(q_acc, fp_acc - 0.02);
  EXPECT_GE(agreement(logits(r.model, T.test.images), logits(fp, T.test.images)), 0.97);
  EXPECT_EQ(r.table.nodes.count("conv1"), 1u);
  Int8Model i8 = lower_to_int8(r.model);
  EXPECT_GE(agreement(i8.forward(T.test.images), logits(r.model, T.test.images)), 0.995);
}

TEST(Ptq, SavedModelLoadsWithItsQuantizers) {
  const auto& T = trained();
  GraphModule fp = T.model();
  PtqResult r = run_ptq(fp, T.train, PtqOptions().calib_batches(2).config(
                                         QuantConfig().weight(QuantScheme(4).per_channel(true))));
  std::string dir = temp_dir("ptq_save");
  save_quantized_model(dir + "/q.nnopt", r.model, R"({"note": "x"})");
  GraphModule back = load_model(dir + "/q.nnopt");
  EXPECT_EQ(find_quantizers(back).size(), find_quantizers(r.model).size());
  EXPECT_TRUE(torch::equal(logits(back, T.test.images), logits(r.model, T.test.images)));
  EXPECT_EQ(export_scale_table(back), r.table);
}

TEST(Ptq, BadOptions) {
  const auto& T = trained();
  GraphModule fp = T.model();
  EXPECT_THROW_MSG(run_ptq(fp, T.train, PtqOptions().calib_batches(0)), ValueError,
                   "calibration needs at least 1 batch, got 0");
  EXPECT_THROW_MSG(run_ptq(fp, T.train, PtqOptions().adaround(true).bias_correction(true)),
                   ValueError, "adaround and bias_correction together");
  EXPECT_THROW_MSG(QuantScheme(9), ValueError, "bits must be in [2, 8], got 9");
  Dataset empty = T.train.slice(0, 0);
  EXPECT_THROW_MSG(run_ptq(fp, empty, PtqOptions()), ValueError, "is empty");
}

TEST(Ptq, WeightMseRangesBeatMinMaxAt3Bits) {
  const auto& T = trained();
  GraphModule fp = T.model();
  GraphModule folded = fold_batch_norm(fp);
  auto cfg = QuantConfig().weight(QuantScheme(3).per_channel(true));
  attach_quantizers(folded, cfg);
  calibrate_weights(folded);
  auto err = [&](GraphModule& m) {
    double e = 0;
    for (const auto& n : layer_nodes(m->graph())) {
      auto& nm = m->node_module(n);
      e += (m->effective_weight(n) - nm.weight).pow(2).sum().item<double>();
    }
    return e;
  };
  const double e_minmax = err(folded);
  set_weight_ranges_mse(folded);
  const double e_mse = err(folded);
  EXPECT_LT(e_mse, 0.8 * e_minmax);
}

TEST(BiasCorrection, EmpiricalRemovesTheMeanShift) {
  const auto& T = trained();
  GraphModule fp = T.model();
  auto cfg = QuantConfig().weight(QuantScheme(3)).quantize_input(false);
  // Weights only: activation quantizers off, so the layer inputs are the float ones.
  PtqResult r = run_ptq(fp, T.train, PtqOptions().calib_batches(4).config(cfg));
  for (const auto& q : find_quantizers(r.model))
    if (!q.weight) q.fq->set_quantizing(false);
  GraphModule ref = fold_batch_norm(fp);
  ref->eval();
  auto batches = take_batches(T.train, 4, 64);
  auto x = torch::cat(batches);
  auto mean_err = [&](GraphModule& m, const std::string& node) {
    TensorMap a, b;
    torch::NoGradGuard ng;
    m->forward(x, {node}, a);
    ref->forward(x, {node}, b);
    return (a.at(node) - b.at(node)).mean({0, 2, 3}).abs().max().item<double>();
  };
  const double before = mean_err(r.model, "conv1");
  const double before_out = (logits(r.model, T.test.images) - logits(ref, T.test.images)).mean(0).abs().mean().item<double>();
  auto shifts = correct_bias_empirical(r.model, batches);
  EXPECT_EQ(shifts.size(), 4u);  // conv1..3, fc
  const double after = mean_err(r.model, "conv1");
  EXPECT_GT(before, 1e-3);
  EXPECT_LT(after, 1e-4);  // conv1's input is the data: the shift is gone on these batches
  const double after_out = (logits(r.model, T.test.images) - logits(ref, T.test.images)).mean(0).abs().mean().item<double>();
  EXPECT_LT(after_out, before_out);
}

// ---------------------------------------------------------------- CLE / DFQ

TEST(Equalize, KeepsTheFunctionAndEqualizesRanges) {
  for (const char* name : {"tiny", "resnet8"}) {
    Graph g = std::string(name) == "tiny" ? tiny_cnn() : [] {
      ModelOptions mo;
      mo.input_shape = {3, 16, 16};
      return build_model("resnet8", mo);
    }();
    torch::manual_seed(3);
    GraphModule m(g);
    randomize_bn(m, 4);
    m->eval();
    GraphModule f = fold_batch_norm(m);
    f->eval();
    auto x = torch::randn({16, g.input_shape()[0], g.input_shape()[1], g.input_shape()[2]});
    auto before = logits(f, x);
    std::vector<double> spread_before;
    auto plan = plan_equalization(f->graph());
    ASSERT_FALSE(plan.pairs.empty()) << name;
    for (const auto& p : plan.pairs) {
      auto [r1, r2] = pair_ranges(f, p);
      spread_before.push_back((r1 / r2).log().abs().max().item<double>());
    }
    EqualizeResult r = equalize_cross_layer(f);
    auto after = logits(f, x);
    EXPECT_LE((after - before).abs().max().item<double>(), 1e-4) << name;
    for (size_t i = 0; i < plan.pairs.size(); ++i) {
      auto [r1, r2] = pair_ranges(f, plan.pairs[i]);
      EXPECT_TRUE(torch::allclose(r1, r2, 1e-3, 1e-6)) << name << " " << plan.pairs[i].first;
      EXPECT_GT(spread_before[i], 0.1) << name;  // there was something to equalize
    }
    EXPECT_LE(r.iterations, 100);
  }
  ModelOptions mo;
  mo.input_shape = {1, 28, 28};
  EXPECT_EQ(plan_equalization(build_model("resnet20", mo)).pairs.size(), 0u);  // BN not folded
  EXPECT_NE(plan_equalization(build_model("resnet20", mo)).to_string().find("fold_batch_norm first"),
            std::string::npos);
}

TEST(Equalize, Relu6PairsAreSkippedWithAReason) {
  ModelOptions mo;
  mo.input_shape = {3, 16, 16};
  mo.width = 0.25;
  GraphModule m(build_model("mobilenetv2", mo));
  m->eval();
  GraphModule f = fold_batch_norm(m);
  auto plan = plan_equalization(f->graph());
  bool relu6 = false;
  for (const auto& s : plan.skipped) relu6 = relu6 || s.find("relu6 is not positively homogeneous") != std::string::npos;
  EXPECT_TRUE(relu6);
  for (const auto& p : plan.pairs) EXPECT_TRUE(p.act.empty() || f->graph().node(p.act).op == OpKind::kReLU);
}

TEST(Dfq, ClippedNormalMomentsMatchMonteCarlo) {
  torch::manual_seed(0);
  Moments z{torch::tensor({-1.0f, 0.5f, 3.0f, 2.0f}), torch::tensor({1.0f, 4.0f, 0.25f, 0.0f})};
  for (auto [lo, hi] : {std::pair<double, double>{0, INFINITY}, {0, 6}, {-1, 1}}) {
    Moments m = clipped_normal_moments(z, lo, hi);
    auto s = z.mean.reshape({1, -1}) + z.var.sqrt().reshape({1, -1}) * torch::randn({400000, 4});
    auto c = s.clamp(lo, hi);
    EXPECT_TRUE(torch::allclose(m.mean, c.mean(0), 0, 0.01)) << lo << " " << hi << m.mean << c.mean(0);
    EXPECT_TRUE(torch::allclose(m.var, c.var(0), 0, 0.02)) << lo << " " << hi << m.var << c.var(0);
  }
}

TEST(Dfq, AnalyticBiasCorrectionReducesTheExpectedOutputError) {
  // Toy layer: input x = relu(z), z ~ N(mu_c, sigma_c^2) per channel; 3-bit weights.
  Graph g;
  g.input("input", {8, 6, 6});
  Conv2dAttrs a;
  a.in_channels = 8;
  a.out_channels = 16;
  a.kernel = {3, 3};
  a.bias = true;
  g.add("conv", OpKind::kConv2d, a, {"input"});
  torch::manual_seed(1);
  GraphModule m(g);
  m->eval();
  auto mu = torch::randn({8}) + 0.5, sd = torch::rand({8}) + 0.5;
  auto x = (mu.reshape({1, 8, 1, 1}) + sd.reshape({1, 8, 1, 1}) * torch::randn({4000, 8, 6, 6})).relu();
  GraphModule fp = clone_plain(m);
  attach_quantizers(m, QuantConfig().weight(QuantScheme(3)).quantize_input(false));
  calibrate_weights(m);
  for (const auto& q : find_quantizers(m))
    if (!q.weight) q.fq->set_quantizing(false);
  auto err = [&] { return (logits(m, x) - logits(fp, x)).mean({0, 2, 3}); };  // [16]
  const double before = err().abs().mean().item<double>();
  MomentsMap mom{{"input", clipped_normal_moments({mu, sd * sd}, 0, INFINITY)}};
  std::vector<std::string> skipped;
  auto done = correct_bias_analytic(m, mom, &skipped);
  EXPECT_EQ(done, std::vector<std::string>{"conv"});
  const double after = err().abs().mean().item<double>();
  EXPECT_GT(before, 1e-3);
  EXPECT_LT(after, 0.1 * before) << before << " -> " << after;
  // Without statistics the layer is skipped, with the reason.
  skipped.clear();
  EXPECT_TRUE(correct_bias_analytic(m, {}, &skipped).empty());
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("no statistics for its input 'input'"), std::string::npos);
}

TEST(Dfq, DataFreeW8A8StaysCloseToFloat) {
  const auto& T = trained();
  GraphModule fp = T.model();
  const auto ref = logits(fp, T.test.images);
  DfqResult r = run_dfq(fp, DfqOptions());
  EXPECT_EQ(r.equalization.plan.pairs.size(), 2u);  // conv1 -> conv2 -> conv3
  EXPECT_EQ(r.corrected.size(), 4u);  // conv1 (input taken as N(0, 1)), conv2, conv3, fc
  EXPECT_GE(agreement(logits(r.model, T.test.images), ref), 0.95);
  EXPECT_GT(accuracy(r.model, T.test), accuracy(fp, T.test) - 0.03);
  EXPECT_GE(agreement(lower_to_int8(r.model).forward(T.test.images), logits(r.model, T.test.images)), 0.99);
  // weight_mse: MSE-searched weight ranges (still no data), never wider than
  // min-max and narrower for some channels at 4 bits.
  const QuantConfig c4 = QuantConfig().weight(QuantScheme(4).per_channel(true));
  DfqResult mm = run_dfq(fp, DfqOptions().config(c4));
  DfqResult ms = run_dfq(fp, DfqOptions().config(c4).weight_mse(true));
  auto qa = find_quantizers(mm.model), qb = find_quantizers(ms.model);
  ASSERT_EQ(qa.size(), qb.size());
  int64_t narrower = 0;
  for (size_t i = 0; i < qa.size(); ++i) {
    if (!qa[i].weight) continue;
    torch::Tensor sa = qa[i].fq->qparams().scale, sb = qb[i].fq->qparams().scale;
    EXPECT_TRUE((sb <= sa * (1 + 1e-6)).all().item<bool>()) << qa[i].node;
    narrower += (sb < sa * 0.999).sum().item<int64_t>();
  }
  EXPECT_GT(narrower, 0);
  EXPECT_EQ(ms.corrected.size(), 4u);
  // No batch norm, no statistics.
  GraphModule plain(tiny_cnn());
  GraphModule folded = fold_batch_norm(plain);
  EXPECT_THROW_MSG(run_dfq(folded, DfqOptions()), ValueError, "no conv->batch_norm pairs");
  EXPECT_THROW_MSG(run_dfq(fp, DfqOptions().activation_ranges("calibrate")), ValueError,
                   "needs calibration data");
  EXPECT_THROW_MSG(run_dfq(fp, DfqOptions().activation_ranges("x")), ValueError,
                   "activation_ranges must be 'bn' or 'calibrate'");
}

// ---------------------------------------------------------------- AdaRound

TEST(AdaRound, BeatsRoundToNearestOnItsLayerAndLandsOnTheGrid) {
  const auto& T = trained();
  GraphModule fp = T.model();
  GraphModule ref = fold_batch_norm(fp);
  ref->eval();
  GraphModule q = clone_plain(ref);
  attach_quantizers(q, QuantConfig().weight(QuantScheme(3).per_channel(true)));
  auto batches = take_batches(T.train, 4, 64);
  calibrate(q, batches);
  auto layers = adaround(q, ref, batches, AdaRoundOptions().iterations(300).lr(1e-2).max_bits(4));
  ASSERT_EQ(layers.size(), 4u);
  for (const auto& l : layers) {
    EXPECT_LT(l.loss_adaround, l.loss_nearest) << l.node;
    EXPECT_GT(l.flipped, 0.0) << l.node;
    auto& m = q->node_module(l.node);
    EXPECT_TRUE(torch::allclose(q->effective_weight(l.node), m.weight, 0, 1e-6)) << l.node;
  }
  auto h = adaround_h(torch::tensor({-100.0f, 0.0f, 100.0f}));
  EXPECT_TRUE(torch::allclose(h, torch::tensor({0.0f, 0.5f, 1.0f})));
  EXPECT_THROW_MSG(AdaRoundOptions().beta_start(1).beta_end(2).validate(), ValueError, "beta_start");
}

// ---------------------------------------------------------------- mixed precision

TEST(MixedPrecision, KnapsackFindsTheBruteForceOptimum) {
  Graph g = tiny_cnn();
  std::vector<LayerSensitivity> sens;
  torch::manual_seed(5);
  for (const auto& n : layer_nodes(g)) {
    LayerSensitivity s;
    s.node = n;
    s.params = node_params(g.node(n)) - (n == "fc" ? 10 : 0);  // weights only (fc has a bias)
    auto r = torch::rand({3});
    s.accuracy_drop = {{2, 0.05 + r[0].item<double>()}, {4, 0.01 * r[1].item<double>()}, {8, 0.0}};
    sens.push_back(s);
  }
  const int64_t lo = quantized_size_bytes(g, {}, 2), hi = quantized_size_bytes(g, {}, 8);
  for (double frac : {0.1, 0.3, 0.6}) {
    const int64_t budget = lo + static_cast<int64_t>(frac * (hi - lo));
    BitAllocation a = allocate_bits(g, sens, budget);
    EXPECT_LE(a.size_bytes, budget);
    // Brute force over 3^4 choices.
    double best = 1e9;
    const int64_t bits[3] = {2, 4, 8};
    for (int code = 0; code < 81; ++code) {
      BitsMap m;
      double cost = 0;
      int c = code;
      for (const auto& s : sens) {
        m[s.node] = bits[c % 3];
        cost += s.accuracy_drop.at(bits[c % 3]);
        c /= 3;
      }
      if (quantized_size_bytes(g, m, 8) <= budget) best = std::min(best, cost);
    }
    EXPECT_NEAR(a.predicted_drop, best, 1e-9) << frac;
  }
  EXPECT_THROW_MSG(allocate_bits(g, sens, lo - 100), ValueError, "is below the smallest model");
}

TEST(MixedPrecision, SensitivityGrowsAsBitsShrink) {
  const auto& T = trained();
  GraphModule fp = T.model();
  GraphModule f = fold_batch_norm(fp);
  f->eval();
  auto sens = weight_sensitivity(f, T.test, SensitivityOptions().bits({2, 8}).metric("loss"));
  ASSERT_EQ(sens.size(), 4u);
  double sum2 = 0, sum8 = 0;
  for (const auto& s : sens) {
    sum2 += s.loss_increase.at(2);
    sum8 += s.loss_increase.at(8);
  }
  EXPECT_GT(sum2, 10 * std::abs(sum8));
  EXPECT_TRUE(find_quantizers(f).empty());  // left as it was
}

// ---------------------------------------------------------------- CLI

struct CliModel {
  std::string dir, ckpt;
  CliModel() {
    dir = temp_dir("ptq_cli");
    ckpt = dir + "/fp32.nnopt";
    GraphModule m = trained().model();
    // The CLI's synthetic dataset is make_synthetic with seeds 1 / 2: the same task.
    save_model(ckpt, m);
  }
};
const CliModel& cli_model() {
  static CliModel* c = new CliModel();
  return *c;
}

nlohmann::json report(const std::string& dir) {
  return nlohmann::json::parse(read_file(dir + "/report.json"));
}

TEST(QuantizeCli, W8A8WritesModelTableAndInt8) {
  const auto& M = cli_model();
  std::string out = M.dir + "/w8";
  auto r = test::run_cli("quantize " + M.ckpt + " --dataset synthetic --limit 512 --method minmax "
                         "--per-channel --calib-batches 2 --no-latency --out " + out, M.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* f : {"model.nnopt", "scales.json", "model.int8.nnopt", "report.json"})
    EXPECT_TRUE(path_exists(out + "/" + f)) << f;
  auto j = report(out);
  EXPECT_GE(j["int8_fake_quant_top1_agreement"].get<double>(), 0.99);
  EXPECT_LT(j["drop_pt"].get<double>(), 3.0);
  EXPECT_NE(r.out.find("int8 (onednn)"), std::string::npos);
  // nnopt eval loads the fake-quant model with its quantizers.
  auto e = test::run_cli("eval " + out + "/model.nnopt --dataset synthetic --limit 512 --json", M.dir);
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NEAR(nlohmann::json::parse(e.out)["accuracy"].get<double>(),
              j["fake_quant_accuracy"].get<double>(), 1e-9);
  // ... and the int8 model on onednn's kernels, on either split.
  e = test::run_cli("eval " + out + "/model.int8.nnopt --dataset synthetic --limit 512 --json", M.dir);
  ASSERT_EQ(e.code, 0) << e.err;
  auto ej = nlohmann::json::parse(e.out);
  EXPECT_EQ(ej["model_kind"], "int8");
  EXPECT_NEAR(ej["accuracy"].get<double>(), j["int8_accuracy"].get<double>(), 1e-9);
  e = test::run_cli("eval " + out + "/model.int8.nnopt --dataset synthetic --limit 512 --split train", M.dir);
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NE(e.out.find("synthetic train samples, int8 model)"), std::string::npos) << e.out;
  e = test::run_cli("eval " + out + "/model.int8.nnopt --dataset synthetic --limit 512 --split val", M.dir);
  EXPECT_EQ(e.code, 2);
  ScaleTable t = ScaleTable::load(out + "/scales.json");
  EXPECT_EQ(t.nodes.at("conv1").weight->scheme.bits(), 8);
}

TEST(QuantizeCli, DfqAdaroundAndMixed) {
  const auto& M = cli_model();
  auto r = test::run_cli("quantize " + M.ckpt + " --dataset synthetic --limit 512 --method dfq "
                         "--per-channel --no-latency --out " + M.dir + "/dfq", M.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = report(M.dir + "/dfq");
  EXPECT_EQ(j["equalized_pairs"].get<int>(), 2);
  EXPECT_LT(j["drop_pt"].get<double>(), 3.0);
  r = test::run_cli("quantize " + M.ckpt + " --dataset synthetic --limit 512 --method adaround "
                    "--wbits 4 --abits 8 --per-channel --adaround-iters 50 --calib-batches 2 --no-latency --out " +
                    M.dir + "/ada", M.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  j = report(M.dir + "/ada");
  EXPECT_EQ(j["adaround"].size(), 4u);
  // 4-bit weights with 8-bit activations run on the int8 kernels as int8
  // codes; |code| <= 8 cannot saturate the int16 pair sums on any CPU.
  EXPECT_TRUE(j.contains("int8_model"));
  EXPECT_TRUE(j["int8_saturating_layers"].empty());
  EXPECT_GE(j["int8_fake_quant_top1_agreement"].get<double>(), 0.99);
  r = test::run_cli("quantize " + M.ckpt + " --dataset synthetic --limit 512 --method minmax "
                    "--per-channel --size-budget 6 --mixed-bits 2,4,8 --sensitivity-samples 128 "
                    "--no-latency --out " + M.dir + "/mixed", M.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  j = report(M.dir + "/mixed");
  EXPECT_LE(j["quantized_size_bytes"].get<int64_t>(), 6 * 1024);
  EXPECT_EQ(j["weight_bits"].size(), 4u);
}

TEST(QuantizeCli, QatMethodRunsFromACalibratedModel) {
  const auto& M = cli_model();
  std::string out = M.dir + "/lsq";
  auto r = test::run_cli("quantize " + M.ckpt + " --dataset synthetic --limit 256 --method lsq --wbits 4 "
                         "--abits 4 --per-channel --epochs 1 --calib-batches 2 --progress off "
                         "--max-batches 1 --schedule constant --weight-decay 1e-4 --out " + out,
                         M.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = report(out);
  EXPECT_TRUE(j.contains("ptq_accuracy"));
  // The QAT recipe options of compare quant apply here too.
  auto m = nlohmann::json::parse(read_file(out + "/qat/metrics.jsonl"));
  EXPECT_EQ(m["steps"].get<int>(), 1);  // of 2 (256 samples, batches of 128)
  EXPECT_DOUBLE_EQ(m["lr"].get<double>(), 0.01);
  EXPECT_TRUE(path_exists(out + "/scales.json"));
  auto e = test::run_cli("eval " + out + "/model.nnopt --dataset synthetic --limit 256 --json", M.dir);
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NEAR(nlohmann::json::parse(e.out)["accuracy"].get<double>(),
              j["fake_quant_accuracy"].get<double>(), 1e-9);
}

TEST(QuantizeCli, ClearErrors) {
  const auto& M = cli_model();
  const std::string base = "quantize " + M.ckpt + " --dataset synthetic --limit 256 --out " + M.dir + "/err ";
  struct Case {
    std::string args, msg;
  };
  for (const auto& c : std::vector<Case>{
           {"--wbits 9", "--wbits must be in [2, 8], got 9"},
           {"--abits 1", "--abits must be in [2, 8], got 1"},
           {"--method foo", "unknown method 'foo' (known: minmax, percentile"},
           {"--calib-batches 0", "calibration needs at least 1 batch, got 0"},
           {"--method lsq --epochs 2 --freeze-bn-epoch 3",
            "--freeze-bn-epoch must be in [0, 2] (0 = never; the QAT epochs), got 3"},
       }) {
    auto r = test::run_cli(base + c.args, M.dir);
    EXPECT_EQ(r.code, 2) << c.args;
    EXPECT_NE(r.err.find(c.msg), std::string::npos) << c.args << ": " << r.err;
  }
  write_file_atomic(M.dir + "/bad.nnopt", "not a checkpoint");
  auto r = test::run_cli("quantize " + M.dir + "/bad.nnopt --dataset synthetic --limit 64 --out " + M.dir + "/e2", M.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find(M.dir + "/bad.nnopt"), std::string::npos) << r.err;
  r = test::run_cli("quantize " + M.dir + "/missing.nnopt --dataset synthetic --limit 64 --out " + M.dir + "/e3", M.dir);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("missing.nnopt"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace nnopt
