// Knowledge distillation: losses against PyTorch (tests/py/distill_golden.py),
// the registry and spec parsing, teachers and ensembles, the callback in the
// Trainer, born-again generations and the `nnopt distill` command.
#include <cmath>
#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/data/dataset.h"
#include "nnopt/distill/attention_loss.h"
#include "nnopt/distill/born_again.h"
#include "nnopt/distill/distill_callback.h"
#include "nnopt/distill/hint_loss.h"
#include "nnopt/distill/kd_loss.h"
#include "nnopt/distill/similarity_loss.h"
#include "nnopt/distill/teacher.h"
#include "nnopt/distill/teacher_cache.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/torchscript.h"
#include "nnopt/train/trainer.h"
#include "test_util.h"

using namespace nnopt;
using nnopt::test::run_cli;
using nnopt::test::temp_dir;
using json = nlohmann::json;

namespace {

constexpr double kRelTol = 1e-5;  // float32 C++ against float64 PyTorch

// The input formula shared with distill_golden.py:
// float32(sin(i * (0.37 + 0.011 * seed) + 1.3 * seed) * scale), row-major.
torch::Tensor gen(std::vector<int64_t> shape, int seed, double scale = 1.0) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  auto i = torch::arange(n, torch::kFloat64);
  return (torch::sin(i * (0.37 + 0.011 * seed) + 1.3 * seed) * scale)
      .to(torch::kFloat32)
      .reshape(shape);
}

void expect_rel(double got, double want, const std::string& what) {
  EXPECT_LE(std::abs(got - want), kRelTol * std::max(1e-12, std::abs(want)))
      << what << ": got " << got << " want " << want;
}

// Runs the golden script once; null JSON with a reason when torch is missing.
const json& golden(std::string* skip = nullptr) {
  static std::string reason;
  static const json values = [] {
    auto tmp = temp_dir("distill_golden");
    auto r = nnopt::test::run_cmd(
        "/usr/bin/python3 '" NNOPT_SOURCE_DIR "/tests/py/distill_golden.py'", tmp);
    if (r.code != 0) {
      reason = "distill_golden.py: " + (r.out.empty() ? r.err : r.out);
      return json();
    }
    return json::parse(r.out);
  }();
  if (skip) *skip = reason;
  return values;
}

#define NEED_GOLDEN()                                  \
  std::string skip_reason;                             \
  const json& g = golden(&skip_reason);                \
  if (g.is_null()) GTEST_SKIP() << skip_reason;

// A graph that is only an input node of `shape`, named `name` (for binding losses).
Graph input_graph(const std::string& name, Shape shape) {
  Graph gr;
  gr.input(name, std::move(shape));
  return gr;
}

// conv(ch) -> bn -> relu -> flatten -> fc(classes), on [1, 8, 8].
GraphModule conv_model(int64_t ch, int64_t classes, uint64_t seed) {
  Graph gr;
  gr.input("input", {1, 8, 8});
  gr.conv2d("conv", "input", ch, 3, 1, 1);
  gr.batch_norm("bn", "conv");
  gr.unary("relu", OpKind::kReLU, "bn");
  gr.flatten("flat", "relu");
  gr.linear("fc", "flat", classes);
  torch::manual_seed(seed);
  return GraphModule(gr);
}

// flatten -> fc1 16 -> relu -> fc2 classes, on [1, 8, 8].
GraphModule mlp_model(int64_t classes, uint64_t seed) {
  Graph gr;
  gr.input("input", {1, 8, 8});
  gr.flatten("flat", "input");
  gr.linear("fc1", "flat", 16);
  gr.unary("relu", OpKind::kReLU, "fc1");
  gr.linear("fc2", "relu", classes);
  torch::manual_seed(seed);
  return GraphModule(gr);
}

TrainOptions quick(int64_t epochs) {
  return TrainOptions(epochs).batch_size(32).lr(0.05).progress("off").weight_decay(0);
}

struct Data {
  Dataset train = make_synthetic(640, {1, 8, 8}, 4, 1);
  Dataset test = make_synthetic(400, {1, 8, 8}, 4, 2);
};
const Data& data() {
  static Data d;
  return d;
}

// A conv teacher trained for 3 epochs on the synthetic task (shared by tests).
GraphModule trained_teacher() {
  static GraphModule t = [] {
    GraphModule m = conv_model(8, 4, 7);
    Trainer tr(m, quick(3));
    tr.fit(data().train);
    m->eval();
    return m;
  }();
  return t;
}

}  // namespace

// ------------------------------------------------------------------ golden values

TEST(DistillGolden, KdMatchesPyTorch) {
  NEED_GOLDEN();
  auto s = gen({8, 10}, 1, 3.0), t = gen({8, 10}, 2, 3.0);
  expect_rel(kd_loss(s, t, 1.0).item<double>(), g["kd_T1"], "kd T=1");
  expect_rel(kd_loss(s, t, 4.0).item<double>(), g["kd_T4"], "kd T=4");
  expect_rel(kd_loss(s, t, 10.0).item<double>(), g["kd_T10"], "kd T=10");
  // The registered loss weights by alpha.
  auto kd = make_distill_loss(parse_loss_spec("kd:T=4,alpha=0.7"));
  DistillContext ctx{s, t, nullptr, nullptr};
  expect_rel(kd->forward(ctx).item<double>(), 0.7 * g["kd_T4"].get<double>(), "0.7 * kd T=4");
  EXPECT_DOUBLE_EQ(kd->soft_target_weight(), 0.7);
}

TEST(DistillGolden, EnsembleAveraging) {
  NEED_GOLDEN();
  std::vector<torch::Tensor> z = {gen({8, 10}, 3, 3.0), gen({8, 10}, 4, 3.0), gen({8, 10}, 5, 3.0)};
  auto el = ensemble_logits(z, EnsembleMode::kLogits).flatten();
  auto ep = ensemble_logits(z, EnsembleMode::kProbs).flatten();
  auto want_l = g["ens_logits"].get<std::vector<double>>();
  auto want_p = g["ens_probs"].get<std::vector<double>>();
  ASSERT_EQ(el.numel(), static_cast<int64_t>(want_l.size()));
  for (int64_t i = 0; i < el.numel(); ++i) {
    EXPECT_NEAR(el[i].item<double>(), want_l[i], 1e-5 * std::max(1.0, std::abs(want_l[i]))) << i;
    EXPECT_NEAR(ep[i].item<double>(), want_p[i], 1e-5 * std::max(1.0, std::abs(want_p[i]))) << i;
  }
  // probs mode: softmax of the result is the mean probability.
  auto mean_p = torch::softmax(torch::stack(z), 2).mean(0);
  EXPECT_TRUE(torch::allclose(torch::softmax(ensemble_logits(z, EnsembleMode::kProbs), 1), mean_p,
                              1e-5, 1e-6));
  auto s = gen({8, 10}, 1, 3.0);
  expect_rel(kd_loss(s, ensemble_logits(z, EnsembleMode::kProbs), 4).item<double>(),
             g["kd_ens_probs_T4"], "kd from ensemble probs");
  expect_rel(kd_loss(s, ensemble_logits(z, EnsembleMode::kLogits), 4).item<double>(),
             g["kd_ens_logits_T4"], "kd from ensemble logits");
  // A Teacher of two live models combines them the same way.
  GraphModule a = mlp_model(4, 1), b = mlp_model(4, 2);
  Teacher ens({a, b}, EnsembleMode::kProbs);
  auto x = gen({5, 1, 8, 8}, 6);
  torch::NoGradGuard ng;
  a->eval();
  b->eval();
  EXPECT_TRUE(torch::allclose(ens.forward(x),
                              ensemble_logits({a->forward(x), b->forward(x)}, EnsembleMode::kProbs)));
}

TEST(DistillGolden, TemperatureSquaredScaling) {
  // Hinton et al. 2015 sec. 2.1: for T >> |logits|, KL * T^2 -> 1/(2K) sum (d - mean d)^2,
  // d = t - s (batch mean). Without the T^2 factor the loss would vanish as 1/T^2.
  auto s = gen({4, 10}, 1, 3.0).to(torch::kFloat64), t = gen({4, 10}, 2, 3.0).to(torch::kFloat64);
  auto d = t - s;
  double limit = ((d - d.mean(1, true)).pow(2).sum(1) / (2.0 * 10)).mean().item<double>();
  double k3 = kd_loss(s, t, 1e3).item<double>(), k4 = kd_loss(s, t, 1e4).item<double>();
  EXPECT_NEAR(k3, limit, 1e-3 * limit);
  EXPECT_NEAR(k4, limit, 1e-4 * limit);
  EXPECT_GT(std::abs(k3 - limit), std::abs(k4 - limit));  // converges
}

TEST(DistillGolden, HintWithAdapter) {
  NEED_GOLDEN();
  torch::nn::Module holder("holder");
  HintLoss hint(std::vector<TapPair>{TapPair{"t", "s"}}, HintOptions(2.0));
  hint.bind(input_graph("s", {6, 8, 8}), input_graph("t", {10, 4, 4}), holder);
  ASSERT_FALSE(hint.adapter(0).is_empty());
  EXPECT_EQ(hint.adapter(0)->weight.sizes(), (std::vector<int64_t>{10, 6, 1, 1}));
  EXPECT_EQ(hint.adapter(0)->bias.sizes(), (std::vector<int64_t>{10}));
  EXPECT_TRUE(holder.named_parameters().contains("hint_0.weight"));
  {
    torch::NoGradGuard ng;
    hint.adapter(0)->weight.copy_(gen({10, 6, 1, 1}, 8, 0.3));
    hint.adapter(0)->bias.copy_(gen({10}, 9, 0.1));
  }
  TensorMap st = {{"s", gen({4, 6, 8, 8}, 6)}}, tt = {{"t", gen({4, 10, 4, 4}, 7)}};
  DistillContext ctx{{}, {}, &st, &tt};
  expect_rel(hint.forward(ctx).item<double>(), 2.0 * g["hint_adapt"].get<double>(), "hint adapter");

  // Same channels: no adapter.
  torch::nn::Module h2("h2");
  HintLoss same(std::vector<TapPair>{TapPair{"t", "s"}});
  same.bind(input_graph("s", {6, 8, 8}), input_graph("t", {6, 8, 8}), h2);
  EXPECT_TRUE(same.adapter(0).is_empty());
  EXPECT_TRUE(h2.parameters().empty());
  TensorMap tt2 = {{"t", gen({4, 6, 8, 8}, 10)}};
  DistillContext ctx2{{}, {}, &st, &tt2};
  expect_rel(same.forward(ctx2).item<double>(), g["hint_same"], "hint same channels");

  // Rank-1 taps: the adapter acts as a linear layer.
  torch::nn::Module h3("h3");
  HintLoss lin(std::vector<TapPair>{TapPair{"t", "s"}});
  lin.bind(input_graph("s", {12}), input_graph("t", {5}), h3);
  ASSERT_FALSE(lin.adapter(0).is_empty());
  EXPECT_EQ(lin.adapter(0)->weight.sizes(), (std::vector<int64_t>{5, 12, 1, 1}));
  {
    torch::NoGradGuard ng;
    lin.adapter(0)->weight.copy_(gen({5, 12, 1, 1}, 13, 0.3));
    lin.adapter(0)->bias.copy_(gen({5}, 14, 0.1));
  }
  TensorMap ls = {{"s", gen({4, 12}, 11)}}, lt = {{"t", gen({4, 5}, 12)}};
  DistillContext ctx3{{}, {}, &ls, &lt};
  expect_rel(lin.forward(ctx3).item<double>(), g["hint_linear"], "hint linear adapter");
}

TEST(DistillGolden, AttentionTransfer) {
  NEED_GOLDEN();
  auto s = gen({4, 6, 8, 8}, 6), t1 = gen({4, 10, 8, 8}, 15), t2 = gen({4, 10, 4, 4}, 7);
  expect_rel(at_loss(s, t1).item<double>(), g["at_code_1"], "at code form");
  expect_rel(at_loss(s, t1, 2.0, "paper").item<double>(), g["at_paper_1"], "at paper form");
  expect_rel(at_loss(s, t2).item<double>(), g["at_code_2"], "at pooled");
  auto q = attention_map(s);
  EXPECT_EQ(q.sizes(), (std::vector<int64_t>{4, 64}));
  EXPECT_TRUE(torch::allclose(q.norm(2, 1), torch::ones({4}), 1e-5, 1e-6));
  // Two pairs with the default beta = 1000: beta/2 * sum over pairs.
  Graph tg;
  tg.input("t1", {10, 8, 8});
  tg.max_pool("t2", "t1", 2, 2);  // {10, 4, 4}
  torch::nn::Module holder("holder");
  AtLoss loss(std::vector<TapPair>{TapPair{"t1", "s"}, TapPair{"t2", "s"}});
  loss.bind(input_graph("s", {6, 8, 8}), tg, holder);
  TensorMap st = {{"s", s}}, tt = {{"t1", t1}, {"t2", t2}};
  DistillContext ctx{{}, {}, &st, &tt};
  expect_rel(loss.forward(ctx).item<double>(), g["at_total_beta1000"], "at beta 1000, two pairs");
}

TEST(DistillGolden, SimilarityPreserving) {
  NEED_GOLDEN();
  auto s = gen({6, 6, 8, 8}, 16), t = gen({6, 10, 4, 4}, 17);
  expect_rel(sp_loss(s, t).item<double>(), g["sp"], "sp");
  auto sim = similarity_matrix(s);
  EXPECT_EQ(sim.sizes(), (std::vector<int64_t>{6, 6}));
  torch::nn::Module holder("holder");
  SpLoss loss(std::vector<TapPair>{TapPair{"t", "s"}});
  loss.bind(input_graph("s", {6, 8, 8}), input_graph("t", {10, 4, 4}), holder);
  TensorMap st = {{"s", s}}, tt = {{"t", t}};
  DistillContext ctx{{}, {}, &st, &tt};
  expect_rel(loss.forward(ctx).item<double>(), g["sp_total_gamma3000"], "sp gamma 3000");
}

// ------------------------------------------------------------------ registry and specs

TEST(DistillRegistry, NamesSpecsAndErrors) {
  auto names = distill_loss_names();
  for (const char* n : {"at", "hint", "kd", "sp"})
    EXPECT_NE(std::find(names.begin(), names.end(), n), names.end()) << n;
  EXPECT_THROW_MSG(make_distill_loss(parse_loss_spec("foo")), ValueError,
                   "unknown distillation loss 'foo' (known: at, hint, kd, sp");
  EXPECT_THROW_MSG(register_distill_loss("kd", [](const LossSpec&) { return DistillLossPtr(); }),
                   ValueError, "'kd' is already registered (known: at, hint, kd");
  register_distill_loss("kd_test_alias", [](const LossSpec& s) {
    return std::make_shared<KdLoss>(KdOptions(nnopt::detail::spec_number("kd_test_alias", "T", s.params.at(0).second)));
  });
  auto alias = make_distill_loss(parse_loss_spec("kd_test_alias:T=3"));
  EXPECT_DOUBLE_EQ(std::dynamic_pointer_cast<KdLoss>(alias)->options().temperature(), 3.0);

  LossSpec spec = parse_loss_spec("kd:T=4,alpha=0.9");
  EXPECT_EQ(spec.name, "kd");
  ASSERT_EQ(spec.params.size(), 2u);
  EXPECT_EQ(spec.params[1].first, "alpha");
  EXPECT_EQ(spec.to_string(), "kd:T=4,alpha=0.9");
  auto kd = std::dynamic_pointer_cast<KdLoss>(make_distill_loss(spec));
  EXPECT_DOUBLE_EQ(kd->options().temperature(), 4.0);
  EXPECT_DOUBLE_EQ(kd->options().alpha(), 0.9);
  auto kd_default = std::dynamic_pointer_cast<KdLoss>(make_distill_loss(parse_loss_spec("kd")));
  EXPECT_DOUBLE_EQ(kd_default->options().temperature(), 4.0);

  EXPECT_THROW_MSG(make_distill_loss(parse_loss_spec("kd:T=0")), ValueError,
                   "kd: temperature T must be > 0, got 0");
  EXPECT_THROW_MSG(make_distill_loss(parse_loss_spec("kd:temperature=-2")), ValueError,
                   "temperature T must be > 0, got -2");
  EXPECT_THROW_MSG(make_distill_loss(parse_loss_spec("kd:alpha=1.5")), ValueError,
                   "kd: alpha must be in [0, 1], got 1.5");
  EXPECT_THROW_MSG(make_distill_loss(parse_loss_spec("kd:beta=1")), ValueError,
                   "kd: unknown option 'beta' (known: T, temperature, alpha)");
  EXPECT_THROW_MSG(make_distill_loss(parse_loss_spec("kd:T=abc")), ValueError,
                   "kd: option T must be a number, got 'abc'");
  EXPECT_THROW_MSG(parse_loss_spec("kd:T"), ValueError, "'T' is not key=value");
  EXPECT_THROW_MSG(parse_loss_spec("kd:T=1,T=2"), ValueError, "key 'T' is given twice");
  EXPECT_THROW_MSG(parse_loss_spec(":T=1"), ValueError, "no loss name");
  EXPECT_THROW_MSG(make_distill_loss(parse_loss_spec("at")), ValueError,
                   "at: needs at least one tap pair");
  EXPECT_THROW_MSG(make_distill_loss(parse_loss_spec("at:form=fancy")), ValueError,
                   "at: form must be 'code' or 'paper', got 'fancy'");
  EXPECT_THROW_MSG(make_distill_loss({"sp", {{"gamma", "-1"}}, {{"a", "b"}}}), ValueError,
                   "sp: gamma must be >= 0, got -1");
  EXPECT_THROW_MSG(HintLoss(std::vector<TapPair>{TapPair{"a", "b"}}, HintOptions(-1)), ValueError,
                   "hint: weight must be >= 0, got -1");
  EXPECT_THROW_MSG(parse_tap_pair("layer1", "--hint"), ValueError,
                   "--hint: 'layer1' is not teacher_tap:student_tap");
  TapPair p = parse_tap_pair("relu:fc1", "--hint");
  EXPECT_EQ(p.teacher, "relu");
  EXPECT_EQ(p.student, "fc1");
}

// ------------------------------------------------------------------ teachers and checks

TEST(DistillCallback, ChecksModelsAndTaps) {
  GraphModule teacher = conv_model(8, 4, 1);
  auto kd = [] { return std::vector<LossSpec>{parse_loss_spec("kd")}; };
  EXPECT_THROW_MSG(make_distill_callback(teacher, conv_model(4, 5, 2), kd()), ValueError,
                   "the teacher has 4 classes but the student has 5");
  Graph other;
  other.input("input", {1, 6, 6});
  other.flatten("flat", "input");
  other.linear("fc", "flat", 4);
  EXPECT_THROW_MSG(make_distill_callback(teacher, GraphModule(other), kd()), ValueError,
                   "the teacher takes input [1, 8, 8] but the student takes [1, 6, 6]");
  EXPECT_THROW_MSG(make_distill_callback(teacher, conv_model(4, 4, 2),
                                         {LossSpec{"hint", {}, {{"nope", "relu"}}}}),
                   GraphError, "hint: tap 'nope' does not exist in the teacher (nodes: input, conv");
  EXPECT_THROW_MSG(make_distill_callback(teacher, conv_model(4, 4, 2),
                                         {LossSpec{"at", {}, {{"relu", "missing"}}}}),
                   GraphError, "at: tap 'missing' does not exist in the student");
  EXPECT_THROW_MSG(make_distill_callback(teacher, conv_model(4, 4, 2),
                                         {LossSpec{"at", {}, {{"fc", "relu"}}}}),
                   ValueError, "at: teacher tap 'fc' has shape [4]; attention maps need [C, H, W]");
  EXPECT_THROW_MSG(make_distill_callback(teacher, teacher, kd()), ValueError,
                   "the teacher is the student itself");
  EXPECT_THROW_MSG(make_distill_callback(teacher, conv_model(4, 4, 2), {}), ValueError,
                   "no distillation loss given");
  EXPECT_THROW_MSG(make_distill_callback(teacher, conv_model(4, 4, 2), {parse_loss_spec("kd"), parse_loss_spec("kd:T=2")}),
                   ValueError, "loss 'kd' is given twice");
  // Ensembles: members must agree; feature taps need a single teacher.
  EXPECT_THROW_MSG(Teacher({conv_model(8, 4, 1), conv_model(8, 3, 2)}, EnsembleMode::kLogits),
                   ValueError, "model 1 has 3 classes but model 0 has 4");
  auto ens = std::make_shared<Teacher>(std::vector<GraphModule>{conv_model(8, 4, 1), conv_model(8, 4, 2)},
                                       EnsembleMode::kProbs);
  std::vector<DistillLossPtr> sp = {make_distill_loss({"sp", {}, {{"relu", "relu"}}})};
  EXPECT_THROW_MSG(DistillCallback(conv_model(4, 4, 3), ens, sp), ValueError,
                   "sp compares features and needs a single teacher, but the ensemble has 2 models");
  EXPECT_THROW_MSG(ensemble_mode_from_name("median"), ValueError,
                   "ensemble mode must be 'logits' or 'probs', got 'median'");
  // The CE weight: 1 - alpha by default, explicit when given, 1 without kd.
  GraphModule st = conv_model(4, 4, 2);
  auto cb = std::dynamic_pointer_cast<DistillCallback>(
      make_distill_callback(teacher, st, {parse_loss_spec("kd:alpha=0.75")}));
  EXPECT_DOUBLE_EQ(cb->ce_weight(), 0.25);
  TrainState state;
  state.model = st;
  cb->on_train_begin(state);
  EXPECT_DOUBLE_EQ(state.task_weight, 0.25);
  state.model = teacher;
  EXPECT_THROW_MSG(cb->on_train_begin(state), ValueError, "trains a different model");
  auto cb2 = std::dynamic_pointer_cast<DistillCallback>(make_distill_callback(
      teacher, conv_model(4, 4, 2), {parse_loss_spec("kd:alpha=0.75")}, DistillOptions().ce_weight(0)));
  EXPECT_DOUBLE_EQ(cb2->ce_weight(), 0.0);
  auto cb3 = std::dynamic_pointer_cast<DistillCallback>(make_distill_callback(
      teacher, conv_model(4, 4, 2), {LossSpec{"sp", {}, {{"relu", "relu"}}}}));
  EXPECT_DOUBLE_EQ(cb3->ce_weight(), 1.0);
}

namespace {
// Keeps the teacher logits it was given; contributes 0.
struct RecordingLoss : DistillLoss {
  std::string name() const override { return "record"; }
  torch::Tensor forward(const DistillContext& ctx) override {
    seen = ctx.teacher_logits;
    return ctx.student_logits.sum() * 0;
  }
  torch::Tensor seen;
};
// After each step, checks the recorded teacher logits against the teacher on state.batch->x.
struct SameBatchCheck : Callback {
  std::string name() const override { return "same_batch"; }
  void on_batch_end(TrainState& st) override {
    torch::NoGradGuard ng;
    teacher->eval();
    auto want = teacher->forward(st.batch->x);
    teacher->train();
    EXPECT_TRUE(torch::allclose(rec->seen, want, 1e-5, 1e-6));
    ++checked;
  }
  GraphModule teacher = nullptr;
  std::shared_ptr<RecordingLoss> rec;
  int checked = 0;
};
}  // namespace

TEST(DistillCallback, TeacherRunsInEvalModeOnTheStudentsBatch) {
  // A teacher with BN in training mode would use batch statistics and update
  // its running stats; the callback must run it in eval mode, restore the
  // flag, and feed it the augmented batch the student sees.
  GraphModule teacher = conv_model(8, 4, 1);
  teacher->train();
  auto before = teacher->state().at("bn.running_mean").clone();
  GraphModule student = conv_model(4, 4, 2);
  auto rec = std::make_shared<RecordingLoss>();
  auto cb = std::make_shared<DistillCallback>(student, std::make_shared<Teacher>(teacher),
                                              std::vector<DistillLossPtr>{rec});
  auto check = std::make_shared<SameBatchCheck>();
  check->teacher = teacher;
  check->rec = rec;
  Trainer tr(student, quick(1).max_batches(3).crop_padding(2).hflip(true));
  tr.add_callback(cb);
  tr.add_callback(check);
  tr.fit(data().train);
  EXPECT_EQ(check->checked, 3);
  EXPECT_TRUE(teacher->is_training());
  EXPECT_TRUE(torch::equal(before, teacher->state().at("bn.running_mean")));
}

// ------------------------------------------------------------------ end to end

TEST(DistillTrain, StudentLearnsFromTeacherAlone) {
  GraphModule teacher = trained_teacher();
  double teacher_acc = evaluate(teacher, data().test).accuracy;
  ASSERT_GT(teacher_acc, 0.8);
  // Labels replaced by 0: with ce weight 0 the teacher is the only signal.
  Dataset no_labels = data().train;
  no_labels.labels = torch::zeros_like(data().train.labels);
  GraphModule student = mlp_model(4, 3);
  double before = evaluate(student, data().test).accuracy;
  auto cb = std::dynamic_pointer_cast<DistillCallback>(
      make_distill_callback(teacher, student, {parse_loss_spec("kd:T=4,alpha=1")}));
  EXPECT_DOUBLE_EQ(cb->ce_weight(), 0.0);
  Trainer tr(student, quick(3).optimizer("adam").lr(0.01));
  tr.add_callback(cb);
  TrainResult r = tr.fit(no_labels);
  double after = evaluate(student, data().test).accuracy;
  EXPECT_GT(after, 0.8) << "before " << before << ", teacher " << teacher_acc;
  const auto& extra = r.history.back().extra;
  EXPECT_TRUE(extra.count("loss_kd"));
  EXPECT_FALSE(extra.count("loss_ce")) << "ce weight 0 must not compute the label loss";
  EXPECT_LT(r.history.back().extra.at("loss_kd"), r.history.front().extra.at("loss_kd"));
}

TEST(DistillTrain, TeacherCacheServesLaterEpochsWithTheSameResult) {
  GraphModule teacher = trained_teacher();
  auto run = [&](bool cache, bool augment, int64_t* hits, int64_t* rows) {
    GraphModule student = mlp_model(4, 3);
    auto cb = std::make_shared<DistillCallback>(
        student, std::make_shared<Teacher>(teacher),
        std::vector<DistillLossPtr>{make_distill_loss(parse_loss_spec("kd:T=4,alpha=0.9"))},
        DistillOptions().cache_teacher(cache));
    TrainOptions o = quick(2).seed(5);
    if (augment) o.hflip(true);
    Trainer tr(student, o);
    tr.add_callback(cb);
    tr.fit(data().train);
    *hits = cb->cache_hits();
    *rows = cb->teacher_rows();
    return student->state();
  };
  int64_t hits = 0, rows = 0;
  auto cached = run(true, false, &hits, &rows);
  const int64_t n = data().train.size();
  EXPECT_EQ(rows, n) << "the first epoch fills the cache";
  EXPECT_EQ(hits, n) << "the second epoch is served from it";
  auto plain = run(false, false, &hits, &rows);
  EXPECT_EQ(hits, 0);
  EXPECT_EQ(rows, 2 * n);
  for (const auto& [name, t] : plain)
    EXPECT_TRUE(torch::allclose(t, cached.at(name), 1e-4, 1e-5)) << name;
  run(true, true, &hits, &rows);  // augmented batches are never cached
  EXPECT_EQ(hits, 0);
  EXPECT_EQ(rows, 2 * n);
}

TEST(DistillTeacherCache, ServesLogitsAndTapsAndRespectsItsLimit) {
  Teacher teacher(trained_teacher());
  const Dataset& d = data().train;
  auto x = d.images.narrow(0, 0, 32), pos = torch::arange(0, 32);
  TeacherCache cache;
  TensorMap a, b, ref;
  auto z1 = cache.forward(teacher, x, pos, {"relu"}, a);
  EXPECT_EQ(cache.computed(), 32);
  auto z2 = cache.forward(teacher, x, pos, {"relu"}, b);
  EXPECT_EQ(cache.hits(), 32);
  auto zr = teacher.forward(x, {"relu"}, ref);
  EXPECT_TRUE(torch::allclose(z2, zr, 1e-5, 1e-6));
  EXPECT_TRUE(torch::allclose(b.at("relu"), ref.at("relu"), 1e-5, 1e-6));
  // A subset in another order comes back row by row.
  auto sub = torch::tensor({5, 3, 31}, torch::kLong);
  TensorMap c;
  auto z3 = cache.forward(teacher, x.index_select(0, sub), sub, {"relu"}, c);
  EXPECT_TRUE(torch::equal(z3, z2.index_select(0, sub)));
  EXPECT_EQ(cache.hits(), 35);
  // Too small to hold the taps: logits are cached, batches needing the tap recompute.
  TeacherCache tiny(32 * 4 * 4);
  TensorMap e;
  tiny.forward(teacher, x, pos, {"relu"}, e);
  tiny.forward(teacher, x, pos, {"relu"}, e);
  EXPECT_EQ(tiny.hits(), 0);
  EXPECT_EQ(tiny.computed(), 64);
  EXPECT_LE(tiny.bytes(), 32 * 4 * 4);
  EXPECT_THROW_MSG(cache.forward(teacher, x, torch::arange(0, 3), {}, e), ValueError,
                   "one dataset position per sample");
}

TEST(DistillTrain, HintAdapterTrainsAndStaysOutOfTheModelFile) {
  GraphModule teacher = trained_teacher();
  GraphModule student = conv_model(4, 4, 5);
  auto cb = std::dynamic_pointer_cast<DistillCallback>(make_distill_callback(
      teacher, student,
      {parse_loss_spec("kd:T=2,alpha=0.5"), LossSpec{"hint", {}, {{"relu", "relu"}}},
       LossSpec{"at", {{"beta", "100"}}, {{"relu", "relu"}}}, LossSpec{"sp", {}, {{"flat", "flat"}}}}));
  // Attached before fit(), so the Trainer's optimizer sees the adapter.
  auto params = student->named_parameters();
  ASSERT_TRUE(params.contains("__distill.hint_0.weight"));
  EXPECT_EQ(params["__distill.hint_0.weight"].sizes(), (std::vector<int64_t>{8, 4, 1, 1}));
  auto w0 = params["__distill.hint_0.weight"].detach().clone();
  auto out = temp_dir("distill_hint");
  Trainer tr(student, quick(1).out_dir(out));
  tr.add_callback(cb);
  TrainResult r = tr.fit(data().train, &data().test);
  auto hint = std::dynamic_pointer_cast<HintLoss>(cb->losses()[1]);
  EXPECT_FALSE(torch::equal(w0, hint->adapter(0)->weight)) << "the adapter did not train";
  for (const char* k : {"loss_kd", "loss_hint", "loss_at", "loss_sp", "loss_ce"}) {
    ASSERT_TRUE(r.history[0].extra.count(k)) << k;
    EXPECT_TRUE(std::isfinite(r.history[0].extra.at(k))) << k;
  }
  // After training the student is plain again, on disk and in memory.
  EXPECT_FALSE(student->named_children().contains("__distill"));
  Checkpoint ck = load_checkpoint(out + "/model.nnopt");
  for (const auto& kv : ck.tensors) EXPECT_NE(kv.first.rfind("__distill", 0), 0u) << kv.first;
  GraphModule back = load_model(out + "/model.nnopt");
  EXPECT_EQ(back->state().size(), student->state().size());
  EXPECT_NE(read_file(out + "/metrics.jsonl").find("\"loss_hint\""), std::string::npos);
}

TEST(DistillTrain, BornAgainGenerations) {
  auto out = temp_dir("distill_ban");
  BornAgainOptions o(2);
  o.train(quick(1).max_batches(5)).out_dir(out).losses({parse_loss_spec("kd:T=2,alpha=0.5")});
  BornAgainResult r = born_again(mlp_model(4, 0)->graph(), data().train, data().test, o);
  ASSERT_EQ(r.test_accuracy.size(), 2u);
  ASSERT_EQ(r.checkpoints.size(), 2u);
  EXPECT_EQ(r.checkpoints[1], out + "/gen2/model.nnopt");
  for (const auto& p : r.checkpoints) EXPECT_TRUE(path_exists(p)) << p;
  EXPECT_FALSE(r.runs[0].history[0].extra.count("loss_kd")) << "generation 1 learns from labels";
  EXPECT_TRUE(r.runs[1].history[0].extra.count("loss_kd"));
  for (double a : r.test_accuracy) EXPECT_GT(a, 0.35);  // chance is 0.25
  EXPECT_THROW_MSG(born_again(mlp_model(4, 0)->graph(), data().train, data().test,
                              BornAgainOptions(0)),
                   ValueError, "generations must be >= 1, got 0");
}

// ------------------------------------------------------------------ CLI

TEST(DistillCli, BadLossSpecIsAUsageError) {
  auto tmp = temp_dir("distill_cli_bad");
  for (auto [spec, text] : std::vector<std::pair<std::string, std::string>>{
           {"kd:T=0", "temperature T must be > 0, got 0"},
           {"kd:alpha=2", "alpha must be in [0, 1], got 2"},
           {"kd:tau=3", "unknown option 'tau'"},
           {"dark", "unknown distillation loss 'dark'"}}) {
    auto r = run_cli("distill --teacher " + tmp + "/none.nnopt --student mlp --dataset synthetic "
                     "--limit 50 --loss " + spec + " --out " + tmp + "/o",
                     tmp);
    EXPECT_EQ(r.code, 2) << spec << ": " << r.err;
    EXPECT_NE(r.err.find(text), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
  auto r = run_cli("distill --student mlp --dataset synthetic --limit 50 --out " + tmp + "/o", tmp);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--teacher CKPT is required"), std::string::npos) << r.err;
  EXPECT_FALSE(path_exists(tmp + "/o/model.nnopt"));
}

TEST(DistillCli, EnsembleRunAndBornAgain) {
  auto tmp = temp_dir("distill_cli_run");
  ModelOptions mo;  // synthetic data: [1, 28, 28], 10 classes
  torch::manual_seed(1);
  GraphModule t1(build_model("mlp", mo));
  torch::manual_seed(2);
  GraphModule t2(build_model("mlp", mo));
  save_model(tmp + "/t1.nnopt", t1);
  export_torchscript(t2, tmp + "/t2.pt");  // the TorchScript import path
  auto r = run_cli("distill --teacher " + tmp + "/t1.nnopt," + tmp + "/t2.pt --ensemble probs "
                   "--student mlp --loss kd:T=2,alpha=0.5 --hint fc2:fc2 --dataset synthetic "
                   "--limit 200 --epochs 1 --batch-size 50 --progress off --threads 1 --json --out " +
                       tmp + "/run",
                   tmp);
  EXPECT_EQ(r.code, 2) << "hint with an ensemble teacher";
  EXPECT_NE(r.err.find("needs a single teacher"), std::string::npos) << r.err;
  r = run_cli("distill --teacher " + tmp + "/t1.nnopt," + tmp + "/t2.pt --ensemble probs "
              "--student mlp --loss kd:T=2,alpha=0.5 --dataset synthetic --limit 200 --epochs 1 "
              "--batch-size 50 --progress off --threads 1 --json --out " + tmp + "/run",
              tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_DOUBLE_EQ(j["ce_weight"].get<double>(), 0.5);
  EXPECT_TRUE(j.contains("teacher_test_accuracy"));
  EXPECT_TRUE(path_exists(tmp + "/run/model.nnopt"));
  EXPECT_NE(read_file(tmp + "/run/metrics.jsonl").find("\"loss_kd\""), std::string::npos);
  EXPECT_NO_THROW(load_model(tmp + "/run/model.nnopt"));

  r = run_cli("distill --generations 2 --student mlp --loss kd:T=1,alpha=1 --dataset synthetic "
              "--limit 200 --epochs 1 --max-batches 2 --batch-size 50 --progress off --threads 1 "
              "--json --out " + tmp + "/ban",
              tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  j = json::parse(r.out);
  EXPECT_EQ(j["generation_test_accuracy"].size(), 2u);
  for (const char* f : {"/ban/gen1/model.nnopt", "/ban/gen2/model.nnopt", "/ban/model.nnopt",
                        "/ban/metrics.jsonl"})
    EXPECT_TRUE(path_exists(tmp + f)) << f;
}

TEST(DistillCli, CompareRunsEveryMethodResumesAndKeepsItsProtocol) {
  auto tmp = temp_dir("distill_compare");
  ModelOptions mo;  // synthetic data: [1, 28, 28], 10 classes
  torch::manual_seed(1);
  GraphModule t1(build_model("lenet5", mo));
  save_model(tmp + "/t1.nnopt", t1);
  torch::manual_seed(2);
  GraphModule t2(build_model("lenet5", mo));
  save_model(tmp + "/t2.nnopt", t2);
  const std::string base = "compare distill --teacher " + tmp + "/t1.nnopt --ensemble " + tmp +
                           "/t1.nnopt," + tmp + "/t2.nnopt --student lenet5 --width 0.5 "
                           "--dataset synthetic --limit 200 --batch-size 50 --lr 0.02 --seeds 0,1 "
                           "--progress off --threads 1 --json --out " + tmp + "/cmp";
  auto r = run_cli(base + " --epochs 1", tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 7u);
  EXPECT_EQ(j["runs_done"].get<int>(), 14);
  int best = 0;
  for (const auto& row : j["rows"]) {
    EXPECT_EQ(row["seeds"].get<int>(), 2) << row.dump();
    EXPECT_EQ(row["test_acc_per_seed"].size(), 2u);
    best += row["best"].get<bool>();
  }
  EXPECT_EQ(best, 1);
  EXPECT_EQ(j["rows"][0]["method"], "alone");
  EXPECT_NE(j["rows"][3]["losses"].get<std::string>().find("hint"), std::string::npos);
  EXPECT_TRUE(path_exists(tmp + "/cmp/compare.csv"));
  EXPECT_TRUE(path_exists(tmp + "/cmp/kd/seed1/result.json"));
  // The same command again: every run is finished, nothing is retrained.
  auto again = run_cli(base + " --epochs 1", tmp);
  ASSERT_EQ(again.code, 0) << again.err;
  json k = json::parse(again.out);
  EXPECT_EQ(k["runs_done"].get<int>(), 0);
  EXPECT_EQ(k["runs_skipped"].get<int>(), 14);
  EXPECT_EQ(k["rows"], j["rows"]);
  // Another protocol in the same folder is refused; so is an unknown method.
  r = run_cli(base + " --epochs 2", tmp);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("holds a study whose"), std::string::npos) << r.err;
  r = run_cli(base + " --epochs 1 --methods alone,dkd", tmp);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown method 'dkd'"), std::string::npos) << r.err;
}

TEST(DistillCli, ConfigListsOfSpecsAndNestedCompareCommand) {
  auto tmp = temp_dir("distill_config");
  ModelOptions mo;
  torch::manual_seed(1);
  GraphModule t1(build_model("mlp", mo));
  save_model(tmp + "/t1.nnopt", t1);
  // A YAML list of a repeatable option: each item (with its own commas) is one spec.
  write_file_atomic(tmp + "/d.yaml",
                    "loss: [\"kd:T=2,alpha=0.5\", \"hint:weight=2\"]\nhint: [\"fc1:fc1\"]\n"
                    "dataset: synthetic\nlimit: 100\nepochs: 1\nbatch_size: 50\n");
  auto r = run_cli("distill --config " + tmp + "/d.yaml --teacher " + tmp +
                       "/t1.nnopt --student mlp --progress off --threads 1 --json --out " + tmp + "/d",
                   tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string losses = json::parse(r.out)["losses"].get<std::string>();
  EXPECT_NE(losses.find("kd:T=2,alpha=0.5"), std::string::npos) << losses;
  EXPECT_NE(losses.find("hint:weight=2 fc1:fc1"), std::string::npos) << losses;
  // A config for a nested command: keys are those of `compare distill`.
  write_file_atomic(tmp + "/c.yaml", "methods: [alone, kd]\nseeds: \"3\"\nstudent: mlp\n"
                                     "dataset: synthetic\nlimit: 100\nepochs: 1\nbatch_size: 50\n");
  r = run_cli("compare distill --config " + tmp + "/c.yaml --teacher " + tmp +
                  "/t1.nnopt --progress off --threads 1 --json --out " + tmp + "/c",
              tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 2u);
  EXPECT_EQ(j["rows"][1]["method"], "kd");
  EXPECT_EQ(j["seeds"], json::array({3}));
  write_file_atomic(tmp + "/bad.yaml", "generations: 2\n");
  r = run_cli("compare distill --config " + tmp + "/bad.yaml --teacher x.nnopt", tmp);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown key 'generations' for 'nnopt compare distill'"), std::string::npos)
      << r.err;
}
