// QAT training step time against the fp32 training step, measured in one run.
// Variants (same zoo model, batch and threads; forward + loss + backward + SGD step):
//   fp32       the model as trained in fp32 (with batch norm)
//   fp32-fold  batch norm folded
//   <method>   W/A learnable quantizers (first/last layer 8-bit), per method, on
//              the graph QAT trains: batch-norm fold simulation (the batch norms
//              stay; each conv uses q(W*s)/s, GraphModuleImpl::set_bn_fold_simulation)
//   none / fakequant  fold simulation with no quantizers / with the calibrated
//              fixed FakeQuants (where the time goes)
//   <method>:fold  the same quantizers on the BN-folded graph (the flow before
//              fold simulation; it diverges in training, docs/results.md)
// The allocator is set up as in training (tune_allocator). Rounds alternate
// the variants; the median step time of each is printed with its ratio to fp32.
// Usage: bench_qat_step MODEL BATCH THREADS [STEPS] [ROUNDS] [BITS] [METHODS,comma-separated]
#include <torch/csrc/autograd/profiler_legacy.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "nnopt/core/runtime.h"
#include "nnopt/deploy/profile.h"
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
  tune_allocator();  // as the Trainer and the CLI do (NNOPT_MALLOC=default: glibc's own)
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
    for (const auto& spec : methods) {
      // METHOD (fold simulation, as QAT trains) or METHOD:fold (on the folded graph).
      const bool folded = spec.size() > 5 && spec.compare(spec.size() - 5, 5, ":fold") == 0;
      const std::string m = folded ? spec.substr(0, spec.size() - 5) : spec;
      GraphModule q = folded ? fold_batch_norm(fp32) : GraphModule(build_model(argv[1], ModelOptions{}));
      q->set_bn_fold_simulation(!folded);
      if (m != "none") {  // none: the graph alone, no quantizers
        attach_quantizers(q, QuantConfig()
                                 .weight(QuantScheme(bits).per_channel(true))
                                 .activation(QuantScheme(bits).is_signed(false).symmetric(false))
                                 .first_last_bits(8));
        calibrate(q, {x});
        // fakequant: the calibrated fixed FakeQuants (straight-through), no learnable parameters
        if (m != "fakequant") attach_qat_quantizers(q, QatOptions().method(m));
      }
      names.push_back(m + " W" + std::to_string(bits) + "A" + std::to_string(bits) + (folded ? " fold" : ""));
      models.push_back(q);
    }
  }
  // One training step: forward, loss, backward, SGD step.
  auto step = [&x, &y](GraphModule& m, torch::optim::SGD& sgd) {
    auto loss = task_loss(m->forward(x), y);
    sgd.zero_grad();
    loss.backward();
    sgd.step();
  };
  auto make_sgd = [](GraphModule& m) {
    return torch::optim::SGD(m->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(1e-4));
  };
  std::vector<std::function<double()>> measure;  // one round of one variant: mean ms per step
  for (GraphModule m : models)
    measure.push_back([m, steps, &step, &make_sgd]() mutable {
      m->train();
      torch::optim::SGD sgd = make_sgd(m);
      double total = 0;
      for (int i = 0; i < steps + 2; ++i) {
        double t0 = now_seconds();
        step(m, sgd);
        if (i >= 2) total += now_seconds() - t0;
      }
      return 1e3 * total / steps;
    });
  const std::vector<double> ms = alternating_medians(measure, rounds);
  // NNOPT_PROFILE=PREFIX: one more step of each variant under LibTorch's
  // profiler, a chrome trace per variant (PREFIX<v>.json).
  if (const char* prof = std::getenv("NNOPT_PROFILE")) {
    for (size_t v = 0; v < models.size(); ++v) {
      GraphModule m = models[v];
      torch::optim::SGD sgd = make_sgd(m);
      torch::autograd::profiler::RecordProfile guard(std::string(prof) + std::to_string(v) + ".json");
      step(m, sgd);
    }
  }
  const double base = ms[0];
  std::printf("%s batch %lld, %s threads, %d steps x %d rounds (median)\n", argv[1],
              static_cast<long long>(batch), argv[3], steps, rounds);
  std::printf("%-16s %10s %8s\n", "variant", "ms/step", "vs fp32");
  for (size_t v = 0; v < models.size(); ++v) {
    const double t = ms[v];
    std::printf("%-16s %10.1f %7.2fx\n", names[v].c_str(), t, t / base);
  }
  return 0;
}
