// Speed-up of hand-given channel structures of a zoo model over the unpruned
// model, predicted by the per-conv latency tables (prune/latency_table.h) and
// measured (both models BN folded, random weights, alternating rounds,
// LibTorch's kernels and per-layer tuned kernels), next to the MAC ratio and
// issue 4's goal (0.8 x the MAC ratio). Used in session 10 to choose a
// structure whose MAC cut becomes speed (docs/results.md).
// Usage: bench_structure_latency MODEL THREADS [GROUP=KEEP,GROUP=KEEP,... ...]
//   Without structures it lists the model's channel groups (KEEP 0 drops a
//   residual branch; groups not named keep all their channels).
#include <cstdio>
#include <iostream>
#include <string>

#include "nnopt/core/runtime.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/prune/criterion.h"
#include "nnopt/prune/latency_table.h"
#include "nnopt/prune/measure.h"
#include "nnopt/prune/structure_search.h"

int main(int argc, char** argv) {
  using namespace nnopt;
  if (argc < 3) {
    std::cerr << "usage: bench_structure_latency MODEL THREADS [GROUP=KEEP,... ...]\n";
    return 2;
  }
  try {
    const int threads = set_threads(std::stoi(argv[2]));
    torch::manual_seed(0);
    GraphModule m0(build_model(argv[1]));
    m0->eval();
    DependencyGraph deps(m0->graph());
    if (argc == 3) {
      for (const auto& g : deps.groups())
        std::printf("%-20s %4lld channels%s\n", g.name.c_str(), static_cast<long long>(g.size()),
                    g.removable() ? "  (residual branch: may keep 0)" : "");
      return 0;
    }
    auto scores = make_importance("l1")->score(m0, deps, {});
    GraphModule a = fold_batch_norm(m0);
    a->eval();
    ConvLatencyTable t1(deps, ConvLatencyTable::Options().batch(1).repeats(20));
    ConvLatencyTable t64(deps, ConvLatencyTable::Options().batch(64).repeats(10));
    std::printf("%s, %d threads, BN folded; speed-ups over the unpruned model (alternating rounds, medians)\n",
                argv[1], threads);
    std::printf("%7s %7s | %-21s | %-21s | %-21s | structure\n", "MACs", "goal", "predicted b1 / b64",
                "measured b1 / b64", "tuned b1 / b64");
    for (int i = 3; i < argc; ++i) {
      const ChannelPlan plan = plan_keeping(deps, scores, parse_channel_counts(argv[i]));
      GraphModule p0 = prune_channels(m0, deps, plan);
      p0->eval();
      GraphModule b = fold_batch_norm(p0);
      b->eval();
      const double r = static_cast<double>(a->graph().macs()) / static_cast<double>(b->graph().macs());
      auto l1 = alternating_latency({&a, &b}, 1, 7, 50);
      auto l64 = alternating_latency({&a, &b}, 64, 5, 10);
      tune_deployment(a, 1);
      tune_deployment(b, 1);
      auto u1 = alternating_latency({&a, &b}, 1, 7, 50);
      tune_deployment(a, 64);
      tune_deployment(b, 64);
      auto u64 = alternating_latency({&a, &b}, 64, 5, 10);
      reset_conv_kernels(a);
      std::printf("%6.2fx %6.2fx | %8.2fx / %8.2fx | %8.2fx / %8.2fx | %8.2fx / %8.2fx | %s\n", r, 0.8 * r,
                  t1.predict(ChannelPlan()) / t1.predict(plan), t64.predict(ChannelPlan()) / t64.predict(plan),
                  l1[0] / l1[1], l64[0] / l64[1], u1[0] / u1[1], u64[0] / u64[1], argv[i]);
      std::fflush(stdout);
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_structure_latency: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
