// QAT training step time against the fp32 training step, measured in one run.
// Variants (same zoo model, batch and threads; forward + loss + backward + SGD step):
//   fp32       the model as trained in fp32 (with batch norm)
//   fp32-fold  batch norm folded (the graph QAT trains)
//   <method>   folded + W/A learnable quantizers (first/last layer 8-bit), per method
// Rounds alternate the variants; the median step time of each is printed with
// its ratio to fp32.
// Usage: bench_qat_step MODEL BATCH THREADS [STEPS] [ROUNDS] [BITS] [METHODS,comma-separated]
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "nnopt/core/runtime.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/qat.h"
#include "nnopt/train/trainer.h"

int main(int argc, char** argv) {
  using namespace nnopt;
  if (argc < 4) {
    std::cerr << "usage: bench_qat_step MODEL BATCH THREADS [STEPS] [ROUNDS] [BITS] [METHODS]\n";
    return 2;
  }
  const int64_t batch = std::stoll(argv[2]);
  set_threads(std::stoi(argv[3]));
  const int steps = argc > 4 ? std::stoi(argv[4]) : 10;
  const int rounds = argc > 5 ? std::stoi(argv[5]) : 5;
  const int64_t bits = argc > 6 ? std::stoll(argv[6]) : 4;
  std::vector<std::string> methods = {"lsq"};
  if (argc > 7) {
    methods.clear();
    std::stringstream ss(argv[7]);
    for (std::string m; std::getline(ss, m, ',');) methods.push_back(m);
  }
  seed_everything(0);
  GraphModule fp32(build_model(argv[1], ModelOptions{}));
  auto x = torch::randn({batch, 1, 28, 28});
  auto y = torch::randint(0, 10, {batch});
  std::vector<std::string> names = {"fp32", "fp32-fold"};
  std::vector<GraphModule> models = {fp32};
  {
    fp32->eval();
    models.push_back(fold_batch_norm(fp32));
    for (const auto& m : methods) {
      GraphModule q = fold_batch_norm(fp32);
      attach_quantizers(q, QuantConfig()
                               .weight(QuantScheme(bits).per_channel(true))
                               .activation(QuantScheme(bits).is_signed(false).symmetric(false))
                               .first_last_bits(8));
      calibrate(q, {x});
      attach_qat_quantizers(q, QatOptions().method(m));
      names.push_back(m + " W" + std::to_string(bits) + "A" + std::to_string(bits));
      models.push_back(q);
    }
  }
  std::vector<std::vector<double>> times(models.size());
  for (int r = 0; r < rounds; ++r) {
    for (size_t v = 0; v < models.size(); ++v) {
      GraphModule m = models[v];
      m->train();
      torch::optim::SGD sgd(m->parameters(),
                            torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(1e-4));
      double total = 0;
      for (int i = 0; i < steps + 2; ++i) {
        double t0 = now_seconds();
        auto loss = task_loss(m->forward(x), y);
        sgd.zero_grad();
        loss.backward();
        sgd.step();
        if (i >= 2) total += now_seconds() - t0;
      }
      times[v].push_back(1e3 * total / steps);
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double base = median(times[0]);
  std::printf("%s batch %lld, %s threads, %d steps x %d rounds (median)\n", argv[1],
              static_cast<long long>(batch), argv[3], steps, rounds);
  std::printf("%-14s %10s %8s\n", "variant", "ms/step", "vs fp32");
  for (size_t v = 0; v < models.size(); ++v) {
    const double t = median(times[v]);
    std::printf("%-14s %10.1f %7.2fx\n", names[v].c_str(), t, t / base);
  }
  return 0;
}
