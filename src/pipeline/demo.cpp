#include "nnopt/pipeline/demo.h"

#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/distill/distill_callback.h"
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
  // bench/distill_compare.sh.)
  ModelOptions half = mopt;
  half.width = 0.5;
  const std::string small = opt.model + " x0.5";
  seed_everything(opt.seed + 1);
  GraphModule alone(build_model(opt.model, half));
  seed_everything(opt.seed + 1);
  GraphModule student(build_model(opt.model, half));
  Trainer t_alone(alone, TrainOptions(topt).out_dir(opt.out_dir + "/" + opt.model + "-half"));
  add_row(alone, small, "fp32, trained alone", t_alone.fit(train, &test));
  Trainer t_kd(student, TrainOptions(topt).out_dir(opt.out_dir + "/" + opt.model + "-half-kd"));
  t_kd.add_callback(make_distill_callback(model, student,
                                          {parse_loss_spec("kd:T=4,alpha=0.5")}));
  add_row(student, small, "fp32, distilled from " + opt.model, t_kd.fit(train, &test));

  nlohmann::json j = {{"model", opt.model},
                      {"epochs", opt.epochs},
                      {"threads", threads()},
                      {"test_accuracy", fp32_acc},
                      {"rows", nlohmann::json::parse(r.table.to_json())}};
  r.json = j.dump();
  return r;
}

}  // namespace nnopt
