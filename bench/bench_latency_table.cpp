// How well the per-conv latency table (prune/latency_table.h) predicts the
// measured latency of physically pruned models: resnet20 (random weights)
// with 0 / 25 / 50 / 75 % of every dependency group's channels removed, at
// batch 1 and 64; measured = BN folded, tuned kernels, median.
// Usage: bench_latency_table [MODEL=resnet20] [THREADS=2] [REPEATS=20]
#include <cstdio>
#include <iostream>
#include <string>

#include "nnopt/core/runtime.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/prune/latency_table.h"

int main(int argc, char** argv) {
  using namespace nnopt;
  try {
    const std::string model = argc > 1 ? argv[1] : "resnet20";
    const int threads = set_threads(argc > 2 ? std::stoi(argv[2]) : 2);
    const int64_t repeats = argc > 3 ? std::stoll(argv[3]) : 20;
    torch::manual_seed(0);
    Graph g = build_model(model);
    DependencyGraph deps(g);
    std::printf("%s, %d threads: predicted (latency table) vs measured (BN folded, tuned convs) ms\n",
                model.c_str(), threads);
    std::printf("%-6s %-9s %12s %12s %8s\n", "batch", "removed", "predicted", "measured", "pred/meas");
    for (int64_t batch : {1, 64}) {
      ConvLatencyTable lut(deps, ConvLatencyTable::Options().batch(batch).repeats(repeats));
      for (double frac : {0.0, 0.25, 0.5, 0.75}) {
        ChannelPlan p;
        for (const auto& grp : deps.groups()) {
          auto n = static_cast<int64_t>(frac * static_cast<double>(grp.size()));
          for (int64_t i = 0; i < n; ++i) p.remove[grp.name].push_back(i);
        }
        const double pred = lut.predict(p);
        GraphModule m0(prune_graph(deps, p));
        m0->eval();
        GraphModule m = fold_batch_norm(m0);
        tune_conv_kernels(m, batch);
        LatencyOptions lo;
        lo.repeats = repeats;
        const double meas = measure_latency(m, batch, lo).median_ms;
        std::printf("%-6lld %8.0f%% %12.3f %12.3f %8.2f\n", static_cast<long long>(batch), 100 * frac, pred, meas,
                    pred / meas);
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_latency_table: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
