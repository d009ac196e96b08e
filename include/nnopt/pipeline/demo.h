#pragma once
// The demo: the main job on the embedded default data (Fashion-MNIST). Trains
// a small model, evaluates it on the test split, profiles it and prints one
// results table. Each family adds its rows (quantized, pruned, distilled).
#include <string>

#include "nnopt/core/table.h"

namespace nnopt {

struct DemoOptions {
  std::string model = "lenet5";   ///< zoo model to train
  int64_t epochs = 8;             ///< training epochs
  int64_t batch_size = 128;
  double lr = 0.05;               ///< SGD, cosine schedule
  std::string data_dir;           ///< "" = /usr/share/datasets/fashion-mnist
  int64_t limit = 0;              ///< >0: use only this many samples per split (quick runs)
  std::string out_dir = "runs/demo";
  uint64_t seed = 0;
  std::string progress = "auto";
  bool resume = false;            ///< continue an interrupted demo run
  void validate() const;
};

struct DemoResult {
  Table table{{"model", "variant", "test acc %", "params", "MACs", "size KiB", "b1 ms",
               "b64 ms", "train s"}};
  std::string json;  ///< the table and the run settings as JSON
};

DemoResult run_demo(const DemoOptions& opt);

}  // namespace nnopt
