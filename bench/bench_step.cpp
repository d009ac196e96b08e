// Times the parts of one training step of a zoo model (forward, backward,
// optimizer step) at a given batch and thread count: where training time goes.
// Usage: bench_step MODEL BATCH THREADS [STEPS]
#include <iostream>

#include "nnopt/core/runtime.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/train/trainer.h"

int main(int argc, char** argv) {
  using namespace nnopt;
  if (argc < 4) {
    std::cerr << "usage: bench_step MODEL BATCH THREADS [STEPS]\n";
    return 2;
  }
  int64_t batch = std::stoll(argv[2]);
  set_threads(std::stoi(argv[3]));
  int steps = argc > 4 ? std::stoi(argv[4]) : 20;
  seed_everything(0);
  GraphModule m(build_model(argv[1], ModelOptions{}));
  m->train();
  torch::optim::SGD sgd(m->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9).nesterov(true).weight_decay(5e-4));
  auto x = torch::randn({batch, 1, 28, 28});
  auto y = torch::randint(0, 10, {batch});
  double tf = 0, tb = 0, ts = 0;
  for (int i = 0; i < steps + 3; ++i) {
    double t0 = now_seconds();
    auto out = m->forward(x);
    auto loss = task_loss(out, y);
    double t1 = now_seconds();
    sgd.zero_grad();
    loss.backward();
    double t2 = now_seconds();
    sgd.step();
    double t3 = now_seconds();
    if (i >= 3) {
      tf += t1 - t0;
      tb += t2 - t1;
      ts += t3 - t2;
    }
  }
  std::printf("forward %.2f ms  backward %.2f ms  step %.2f ms\n", 1e3 * tf / steps,
              1e3 * tb / steps, 1e3 * ts / steps);
  return 0;
}
