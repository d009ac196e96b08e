#include "nnopt/pipeline/demo.h"

#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/profile.h"
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
  seed_everything(opt.seed);
  GraphModule model(build_model(opt.model, mopt));

  TrainOptions topt;
  topt.epochs(opt.epochs)
      .batch_size(opt.batch_size)
      .lr(opt.lr)
      .momentum(0.9)
      .nesterov(true)
      .weight_decay(5e-4)
      .schedule("cosine")
      .seed(opt.seed)
      .out_dir(opt.out_dir + "/" + opt.model)
      .resume(opt.resume)
      .progress(opt.progress);
  Trainer trainer(model, topt);
  TrainResult tr = trainer.fit(train, &test);
  double train_seconds = 0;
  for (const auto& m : tr.history) train_seconds += m.seconds;

  EvalResult ev = evaluate(model, test);
  LatencyOptions lat;
  lat.repeats = 20;
  ModelProfile prof = profile_model(model, {1, 64}, lat);

  DemoResult r;
  r.table.add_row({opt.model, "fp32", fmt(100 * ev.accuracy, 2), std::to_string(prof.params),
                   std::to_string(prof.macs), fmt(prof.size_bytes / 1024.0, 1),
                   fmt(prof.latency[0].median_ms, 3), fmt(prof.latency[1].median_ms, 3),
                   fmt(train_seconds, 1)});
  nlohmann::json j = {{"model", opt.model},
                      {"epochs", opt.epochs},
                      {"threads", threads()},
                      {"test_accuracy", ev.accuracy},
                      {"rows", nlohmann::json::parse(r.table.to_json())}};
  r.json = j.dump();
  return r;
}

}  // namespace nnopt
