#include "nnopt/pipeline/demo.h"

#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/deploy/int8.h"
#include "nnopt/distill/distill_callback.h"
#include "nnopt/core/file_util.h"
#include "nnopt/prune/criterion.h"
#include "nnopt/prune/dependency.h"
#include "nnopt/prune/surgery.h"
#include "nnopt/prune/target.h"
#include "nnopt/quant/ptq.h"
#include "nnopt/quant/qat.h"
#include "nnopt/models/zoo.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

void DemoOptions::validate() const {
  NNOPT_CHECK(epochs >= 1, ValueError, "demo: epochs must be >= 1, got ", epochs);
  NNOPT_CHECK(batch_size >= 1, ValueError, "demo: batch_size must be >= 1, got ", batch_size);
  NNOPT_CHECK(limit >= 0, ValueError, "demo: limit must be >= 0, got ", limit);
}

DemoResult run_demo(const DemoOptions& opt) {
  opt.validate();
  DatasetOptions dopt;
  dopt.name = "fashion-mnist";
  dopt.dir = opt.data_dir;
  dopt.limit = opt.limit;
  Dataset train = load_dataset(dopt, true);
  Dataset test = load_dataset(dopt, false);

  ModelOptions mopt;
  mopt.input_shape = train.shape();
  mopt.num_classes = train.num_classes;

  TrainOptions topt;
  topt.epochs(opt.epochs)
      .batch_size(opt.batch_size)
      .lr(opt.lr)
      .momentum(0.9)
      .nesterov(true)
      .weight_decay(5e-4)
      .schedule("cosine")
      .seed(opt.seed)
      .resume(opt.resume)
      .progress(opt.progress);

  DemoResult r;
  LatencyOptions lat;
  lat.repeats = 20;
  // One row: accuracy, size, measured latency at batch 1 and 64, training time.
  auto add_row = [&](GraphModule& m, const std::string& name, const std::string& variant,
                     const TrainResult& tr) {
    double train_seconds = 0;
    for (const auto& e : tr.history) train_seconds += e.seconds;
    EvalResult ev = evaluate(m, test);
    ModelProfile prof = profile_model(m, {1, 64}, lat);
    r.table.add_row({name, variant, fmt(100 * ev.accuracy, 2), std::to_string(prof.params),
                     std::to_string(prof.macs), fmt(prof.size_bytes / 1024.0, 1),
                     fmt(prof.latency[0].median_ms, 3), fmt(prof.latency[1].median_ms, 3),
                     fmt(train_seconds, 1)});
    return ev.accuracy;
  };

  // fp32 baseline.
  seed_everything(opt.seed);
  GraphModule model(build_model(opt.model, mopt));
  Trainer trainer(model, TrainOptions(topt).out_dir(opt.out_dir + "/" + opt.model));
  TrainResult tr = trainer.fit(train, &test);
  const double fp32_acc = add_row(model, opt.model, "fp32", tr);

  // Distillation: the same architecture at half width, trained alone and
  // taught by the fp32 model (Hinton KD, T = 4, alpha = 0.5), same recipe and
  // initialisation, so the two rows differ only by the teacher. (alpha 0.9 with
  // this SGD recipe can kill lenet5, which has no batch norm: see
  // bench/distill_compare.sh.) Both start with one epoch of linear warm-up:
  // the KD term's gradient is T = 4 times the size of the cross-entropy's, and
  // without warm-up the distilled lenet5 x0.5 fell to 10 % in its first epoch at
  // lr 0.05 (session 11; with warm-up it trains, docs/results.md).
  TrainOptions half_topt = TrainOptions(topt).warmup_epochs(1);
  ModelOptions half = mopt;
  half.width = 0.5;
  const std::string small = opt.model + " x0.5";
  seed_everything(opt.seed + 1);
  GraphModule alone(build_model(opt.model, half));
  seed_everything(opt.seed + 1);
  GraphModule student(build_model(opt.model, half));
  Trainer t_alone(alone, TrainOptions(half_topt).out_dir(opt.out_dir + "/" + opt.model + "-half"));
  add_row(alone, small, "fp32, trained alone", t_alone.fit(train, &test));
  Trainer t_kd(student, TrainOptions(half_topt).out_dir(opt.out_dir + "/" + opt.model + "-half-kd"));
  t_kd.add_callback(make_distill_callback(model, student,
                                          {parse_loss_spec("kd:T=4,alpha=0.5")}));
  add_row(student, small, "fp32, distilled from " + opt.model, t_kd.fit(train, &test));

  // Quantization: W8A8 post-training (per-channel weights, 8 calibration
  // batches), run on onednn's integer kernels: accuracy, file size and latency
  // are those of the int8 model itself.
  {
    PtqResult ptq = run_ptq(model, train, PtqOptions());
    Int8Model q = lower_to_int8(ptq.model);
    EvalResult ev = evaluate_logits([&](const torch::Tensor& x) { return q.forward(x); }, test);
    const std::string path = path_join(opt.out_dir, opt.model + ".int8.nnopt");
    q.save(path);
    torch::Tensor x1 = test.images.narrow(0, 0, 1), x64 = test.images.narrow(0, 0, std::min<int64_t>(64, test.size()));
    Latency l1 = time_forward([&] { q.forward(x1); }, 1, lat);
    Latency l64 = time_forward([&] { q.forward(x64); }, x64.size(0), lat);
    r.table.add_row({opt.model, "int8 PTQ (W8A8, onednn)", fmt(100 * ev.accuracy, 2),
                     std::to_string(model->graph().num_params()), std::to_string(model->graph().macs()),
                     fmt(file_size(path) / 1024.0, 1), fmt(l1.median_ms, 3), fmt(l64.median_ms, 3),
                     fmt(ptq.seconds, 1)});
  }
  // W4A4 quantization-aware training with LSQ from a calibrated start, 2
  // epochs. No 4-bit kernels run on this CPU: latency is not reported, and
  // the size is that of the packed 4-bit weights (8-bit first and last layer)
  // plus float32 biases, not of a file.
  {
    QuantConfig qc = QuantConfig()
                         .weight(QuantScheme(4).per_channel(true))
                         .activation(QuantScheme(4).is_signed(false).symmetric(false))
                         .first_last_bits(8);
    PtqResult start = run_ptq(model, train, PtqOptions().config(qc));
    GraphModule qat = start.model;
    TrainOptions qt = TrainOptions(topt).epochs(std::min<int64_t>(2, opt.epochs)).lr(0.01).optimizer("sgd");
    qt.out_dir(opt.out_dir + "/" + opt.model + "-w4a4-lsq");
    TrainResult tr_q = run_qat(qat, train, &test, QatOptions().method("lsq").train(qt));
    double bits = 0;
    const auto& layers = qat->graph().nodes();
    std::string first, last;
    for (const auto& n : layers)
      if (n.op == OpKind::kConv2d || n.op == OpKind::kLinear) {
        if (first.empty()) first = n.name;
        last = n.name;
      }
    for (const auto& n : layers) {
      if (n.op != OpKind::kConv2d && n.op != OpKind::kLinear) continue;
      const auto& st = qat->node_module(n.name);
      const int64_t w = st.weight.numel(), b = st.bias.defined() ? st.bias.numel() : 0;
      bits += static_cast<double>(w) * ((n.name == first || n.name == last) ? 8 : 4) + 32.0 * b;
    }
    double secs = 0;
    for (const auto& e : tr_q.history) secs += e.seconds;
    EvalResult ev = evaluate(qat, test);
    r.table.add_row({opt.model, "W4A4 LSQ QAT (fake-quant)", fmt(100 * ev.accuracy, 2),
                     std::to_string(model->graph().num_params()), std::to_string(model->graph().macs()),
                     fmt(bits / 8 / 1024.0, 1), "-", "-", fmt(secs, 1)});
  }
  // Pruning: half of the MACs removed by L1 filter norm (channels physically
  // removed, kept channels per layer from a global ranking), then fine-tuned
  // for 2 epochs; latency measured on the smaller model.
  {
    DependencyGraph deps(model->graph());
    auto scores = make_importance("l1")->score(model, deps, ImportanceData());
    ChannelSolution sol = solve_channel_target(deps, scores, PruneTarget::parse("macs=0.5"),
                                               ChannelPlannerOptions());
    GraphModule small = prune_channels(model, deps, sol.plan);
    TrainOptions ft = TrainOptions(topt).epochs(std::min<int64_t>(2, opt.epochs)).lr(opt.lr / 5);
    Trainer t_ft(small, ft.out_dir(opt.out_dir + "/" + opt.model + "-pruned"));
    add_row(small, opt.model + " -50% MACs", "pruned (L1, channels) + fine-tuned", t_ft.fit(train, &test));
  }

  nlohmann::json j = {{"model", opt.model},
                      {"epochs", opt.epochs},
                      {"threads", threads()},
                      {"test_accuracy", fp32_acc},
                      {"rows", nlohmann::json::parse(r.table.to_json())}};
  r.json = j.dump();
  return r;
}

}  // namespace nnopt
