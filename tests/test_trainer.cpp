#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/data/dataset.h"
#include "nnopt/models/zoo.h"
#include "nnopt/train/schedule.h"
#include "nnopt/train/trainer.h"
#include "test_util.h"

using namespace nnopt;
using nnopt::test::temp_dir;

namespace {
GraphModule tiny_model(uint64_t seed = 0) {
  Graph g;
  g.input("input", {1, 8, 8});
  g.conv2d("conv", "input", 6, 3, 1, 1);
  g.batch_norm("bn", "conv");
  g.unary("relu", OpKind::kReLU, "bn");
  g.flatten("flat", "relu");
  g.linear("fc", "flat", 4);
  torch::manual_seed(seed);
  return GraphModule(g);
}

TrainOptions quick(int64_t epochs) {
  return TrainOptions(epochs).batch_size(32).lr(0.05).progress("off").weight_decay(0);
}
}  // namespace

TEST(Schedule, Values) {
  LrSchedule s;
  s.kind = "cosine";
  s.base_lr = 0.1;
  s.total_steps = 100;
  EXPECT_DOUBLE_EQ(s.at(0), 0.1);
  EXPECT_NEAR(s.at(50), 0.05, 1e-12);
  EXPECT_NEAR(s.at(100), 0.0, 1e-12);
  s.warmup_steps = 10;
  EXPECT_NEAR(s.at(0), 0.01, 1e-12);
  EXPECT_NEAR(s.at(9), 0.1, 1e-12);
  EXPECT_NEAR(s.at(55), 0.05, 1e-12);  // cosine restarts its clock after warm-up
  LrSchedule st;
  st.kind = "step";
  st.base_lr = 1.0;
  st.steps_per_epoch = 10;
  st.step_size = 2;
  st.gamma = 0.5;
  EXPECT_DOUBLE_EQ(st.at(19), 1.0);
  EXPECT_DOUBLE_EQ(st.at(20), 0.5);
  EXPECT_DOUBLE_EQ(st.at(45), 0.25);
  LrSchedule ms = st;
  ms.kind = "multistep";
  ms.milestones = {1, 3};
  EXPECT_DOUBLE_EQ(ms.at(9), 1.0);
  EXPECT_DOUBLE_EQ(ms.at(10), 0.5);
  EXPECT_DOUBLE_EQ(ms.at(35), 0.25);
  LrSchedule bad;
  bad.kind = "linear";
  EXPECT_THROW_MSG(bad.validate(), ValueError, "unknown kind 'linear'");
}

TEST(Trainer, OptionErrors) {
  EXPECT_THROW_MSG(TrainOptions(0).validate(), ValueError, "epochs must be >= 1, got 0");
  EXPECT_THROW_MSG(TrainOptions(1).lr(-1).validate(), ValueError, "lr must be > 0");
  EXPECT_THROW_MSG(TrainOptions(1).optimizer("rmsprop").validate(), ValueError, "'rmsprop'");
  EXPECT_THROW_MSG(TrainOptions(1).label_smoothing(1.0).validate(), ValueError, "label_smoothing");
  EXPECT_THROW_MSG(TrainOptions(1).resume(true).validate(), ValueError, "resume needs");
  EXPECT_THROW_MSG(TrainOptions(1).memory_format("nhwc").validate(), ValueError,
                   "memory_format must be channels_last or contiguous, got 'nhwc'");
}

TEST(Trainer, LearnsSyntheticData) {
  Dataset train = make_synthetic(1024, {1, 8, 8}, 4, 1);
  Dataset test = make_synthetic(256, {1, 8, 8}, 4, 2);
  GraphModule m = tiny_model();
  double before = evaluate(m, test).accuracy;
  Trainer t(m, quick(4));
  TrainResult r = t.fit(train, &test);
  ASSERT_EQ(r.history.size(), 4u);
  EXPECT_LT(r.history.back().train_loss, r.history.front().train_loss);
  EXPECT_GT(r.final_val_acc, 0.9);
  EXPECT_GT(r.final_val_acc, before + 0.3);
  EXPECT_NEAR(evaluate(m, test).accuracy, r.final_val_acc, 1e-12);
  for (const char* opt : {"adam", "adamw"}) {
    GraphModule m2 = tiny_model();
    Trainer t2(m2, quick(2).optimizer(opt).lr(0.01));
    EXPECT_GT(t2.fit(train, &test).final_val_acc, 0.8) << opt;
  }
}

// The two memory orders train alike (same losses and weights up to float
// rounding), and the order is the fit's own: the caller's model is left as it was.
TEST(Trainer, ChannelsLastTrainsLikeContiguous) {
  Dataset train = make_synthetic(256, {1, 8, 8}, 4, 1);
  std::vector<TrainResult> r;
  std::vector<GraphModule> ms;
  for (const char* fmt : {"contiguous", "channels_last"}) {
    GraphModule m = tiny_model(3);
    Trainer t(m, quick(2).memory_format(fmt));
    r.push_back(t.fit(train));
    EXPECT_FALSE(m->channels_last()) << fmt;
    ms.push_back(m);
  }
  for (size_t e = 0; e < 2; ++e)
    EXPECT_NEAR(r[0].history[e].train_loss, r[1].history[e].train_loss, 1e-4) << "epoch " << e;
  auto a = ms[0]->state(), b = ms[1]->state();
  for (const auto& [k, v] : a)
    if (v.is_floating_point()) EXPECT_TRUE(torch::allclose(v, b.at(k), 1e-3, 1e-4)) << k;
}

namespace {
// Skips every other batch, adds an L2 term, and skips the step on batch 0.
struct Probe : Callback {
  std::string name() const override { return "probe"; }
  bool on_batch_begin(TrainState& st) override { return st.step_in_epoch % 2 == 0; }
  std::vector<std::string> taps() const override { return {"relu"}; }
  torch::Tensor loss_term(TrainState& st) override {
    saw_tap = saw_tap || st.taps.count("relu");
    auto t = 1e-3 * st.taps.at("relu").pow(2).mean();
    st.step_terms["l2act"] = t.item<double>();
    return t;
  }
  void on_after_backward(TrainState& st) override {
    if (st.step_in_epoch == 0) st.skip_step = true;
  }
  void on_epoch_end(TrainState& st, EpochMetrics& m) override {
    m.extra["probe_epochs"] = ++epochs;
  }
  std::string state_json() const override { return "{\"epochs\": " + std::to_string(epochs) + "}"; }
  void load_state_json(const std::string& s) override {
    epochs = std::stoi(s.substr(s.find(':') + 1));
  }
  bool saw_tap = false;
  int epochs = 0;
};
}  // namespace

TEST(Trainer, CallbacksSkipAddLossAndEditSteps) {
  Dataset train = make_synthetic(256, {1, 8, 8}, 4, 1);  // 8 batches of 32
  GraphModule m = tiny_model();
  Trainer t(m, quick(1));
  auto probe = std::make_shared<Probe>();
  t.add_callback(probe);
  EXPECT_THROW_MSG(t.add_callback(std::make_shared<Probe>()), ValueError, "registered twice");
  TrainResult r = t.fit(train);
  const auto& e = r.history.at(0);
  EXPECT_EQ(e.skipped, 4);
  EXPECT_EQ(e.steps, 3);  // 4 batches ran, one step skipped
  EXPECT_TRUE(probe->saw_tap);
  EXPECT_GT(e.extra.at("loss_l2act"), 0);
  EXPECT_DOUBLE_EQ(e.extra.at("probe_epochs"), 1);
  EXPECT_TRUE(std::isnan(e.val_acc));
}

namespace {
// Makes one gradient infinite after the backward of the given step.
struct PoisonGrad : Callback {
  explicit PoisonGrad(int64_t step) : step(step) {}
  std::string name() const override { return "poison"; }
  void on_after_backward(TrainState& st) override {
    if (st.step_in_epoch == step) st.model->named_parameters()["fc.weight"].mutable_grad()[0][0] = INFINITY;
  }
  int64_t step;
};
}  // namespace

// A non-finite gradient stops training before it reaches the weights, and the
// error names the parameter; a non-finite loss names the buffer that caused it.
TEST(Trainer, NonFiniteGradientStopsBeforeTheStep) {
  Dataset train = make_synthetic(256, {1, 8, 8}, 4, 1);
  GraphModule m = tiny_model();
  Trainer t(m, quick(1));
  t.add_callback(std::make_shared<PoisonGrad>(2));
  EXPECT_THROW_MSG(t.fit(train), ValueError,
                   "train: the gradient of fc.weight is not finite at epoch 1 step 3");
  for (const auto& p : m->parameters()) EXPECT_TRUE(p.isfinite().all().item<bool>());

  GraphModule m2 = tiny_model();
  m2->named_buffers()["bn.running_var"].fill_(INFINITY);
  m2->named_parameters()["bn.weight"].data().fill_(NAN);
  Trainer t2(m2, quick(1));
  EXPECT_THROW_MSG(t2.fit(train), ValueError, "train: loss became nan at epoch 1 step 1; parameter bn.weight");
}

TEST(Trainer, ResumeMatchesUninterruptedRun) {
  Dataset train = make_synthetic(512, {1, 8, 8}, 4, 1);
  Dataset test = make_synthetic(128, {1, 8, 8}, 4, 2);
  auto opts = [&](const std::string& d, int64_t e) {
    return quick(e).out_dir(d).crop_padding(1).hflip(true).seed(7).resume(true);
  };
  // An interrupted run: the first epoch, then a fresh process-like resume to 3.
  auto dir_c = temp_dir("resume_c");
  GraphModule c1 = tiny_model(3);
  auto probe1 = std::make_shared<Probe>();
  Trainer t1(c1, opts(dir_c, 3));
  t1.add_callback(probe1);
  // Stop after the first epoch by asking the trainer to stop.
  struct StopAfterOne : Callback {
    std::string name() const override { return "stop"; }
    void on_epoch_end(TrainState& st, EpochMetrics&) override { st.stop = true; }
  };
  t1.add_callback(std::make_shared<StopAfterOne>());
  t1.fit(train, &test);
  GraphModule c2 = tiny_model(99);  // different init: all must come from the checkpoint
  Trainer t2(c2, opts(dir_c, 3));
  auto probe2 = std::make_shared<Probe>();
  t2.add_callback(probe2);
  TrainResult rc = t2.fit(train, &test);
  EXPECT_EQ(rc.resumed_from, 1);
  ASSERT_EQ(rc.history.size(), 3u);
  EXPECT_EQ(probe2->epochs, 3);  // callback state came back from the checkpoint

  // Same callbacks in an uninterrupted run for a fair comparison.
  auto dir_d = temp_dir("resume_d");
  GraphModule d = tiny_model(3);
  Trainer td(d, opts(dir_d, 3));
  td.add_callback(std::make_shared<Probe>());
  TrainResult rd = td.fit(train, &test);
  for (auto& [k, v] : d->state()) EXPECT_TRUE(v.equal(c2->state().at(k))) << k;
  EXPECT_EQ(rd.history.back().train_loss, rc.history.back().train_loss);
  EXPECT_EQ(rd.history.back().val_acc, rc.history.back().val_acc);
  EXPECT_GT(rd.final_val_acc, 0.5);
  // metrics.jsonl has one line per epoch.
  std::string lines = read_file(dir_c + "/metrics.jsonl");
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 3);
  // A changed recipe is refused on resume.
  GraphModule e = tiny_model(3);
  EXPECT_THROW_MSG(Trainer(e, opts(dir_c, 3).lr(0.2)).fit(train, &test), ValueError,
                   "option 'lr' was 0.05");
}
