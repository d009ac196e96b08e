// nnopt side of the training-throughput benchmark (peer: bench/train_peer.py).
// Usage: bench_train MODEL BATCHES BATCH_SIZE THREADS [DATA_DIR]
// Runs the real Trainer (loader, forward, loss, backward, SGD step, metrics) for
// two epochs of BATCHES batches; the first warms up, the second is reported.
// NNOPT_MEMORY_FORMAT=contiguous|channels_last overrides the Trainer's
// activation memory order (default channels_last).
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>

#include "nnopt/core/runtime.h"
#include "nnopt/data/dataset.h"
#include "nnopt/models/zoo.h"
#include "nnopt/train/trainer.h"

int main(int argc, char** argv) {
  using namespace nnopt;
  if (argc < 5) {
    std::cerr << "usage: bench_train MODEL BATCHES BATCH_SIZE THREADS [DATA_DIR]\n";
    return 2;
  }
  std::string model_name = argv[1];
  int64_t batches = std::stoll(argv[2]), batch_size = std::stoll(argv[3]);
  int threads = set_threads(std::stoi(argv[4]));
  DatasetOptions dopt;
  if (argc > 5) dopt.dir = argv[5];
  Dataset train = load_dataset(dopt, true);
  seed_everything(0);
  GraphModule model(build_model(model_name, ModelOptions{}));
  TrainOptions opt(2);
  opt.batch_size(batch_size).max_batches(batches).lr(0.05).nesterov(true).schedule("constant")
      .progress("off");
  if (const char* f = std::getenv("NNOPT_MEMORY_FORMAT")) opt.memory_format(f);
  Trainer t(model, opt);
  TrainResult r = t.fit(train);
  const EpochMetrics& e = r.history.back();
  nlohmann::json j = {{"impl", "nnopt"},
                      {"model", model_name},
                      {"threads", threads},
                      {"memory_format", opt.memory_format()},
                      {"batch_size", batch_size},
                      {"images", e.steps * batch_size},
                      {"seconds", e.seconds},
                      {"images_per_sec", e.images_per_sec}};
  std::cout << j.dump() << std::endl;
  return 0;
}
