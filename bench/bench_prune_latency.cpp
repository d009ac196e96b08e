// Latency of a physically pruned model against its original, both with batch
// norm folded (as deployed), timed in alternating rounds in one process
// (prune/measure.h) so that load changes hit both alike. Prints ms and the
// speed-up at batch 1 and 64 next to the MAC reduction and the goal
// (speed-up >= 0.8 x the MAC ratio). Two settings: LibTorch's own conv kernel
// choice on THREADS threads ("auto"), and each model tuned for deployment at
// that batch size (tune_deployment in deploy/conv_tuning.h: the faster of
// onednn and im2col + GEMM for each layer, and the faster thread count up to
// THREADS; the "thr" column, original/pruned: "1t" = one thread with per-layer
// kernels, "2a" = two threads with LibTorch's kernels), so that both models
// run at their best.
// With VERBOSE=1 in the environment it prints the per-layer tuning tables.
// Usage: bench_prune_latency ORIGINAL.nnopt PRUNED.nnopt [THREADS=2] [ROUNDS=7] [REPEATS=30]
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "nnopt/core/runtime.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/prune/measure.h"

int main(int argc, char** argv) {
  using namespace nnopt;
  if (argc < 3) {
    std::cerr << "usage: bench_prune_latency ORIGINAL.nnopt PRUNED.nnopt [THREADS=2] [ROUNDS=7] [REPEATS=30]\n";
    return 2;
  }
  try {
    const int threads = set_threads(argc > 3 ? std::stoi(argv[3]) : 2);
    const int64_t rounds = argc > 4 ? std::stoll(argv[4]) : 7;
    const int64_t repeats = argc > 5 ? std::stoll(argv[5]) : 30;
    GraphModule a0 = load_model(argv[1]), b0 = load_model(argv[2]);
    a0->eval();
    b0->eval();
    GraphModule a = fold_batch_norm(a0), b = fold_batch_norm(b0);
    a->eval();
    b->eval();
    const double ma = static_cast<double>(a->graph().macs()), mb = static_cast<double>(b->graph().macs());
    std::printf("original %s: %.3f M MACs; pruned %s: %.3f M MACs (%.2fx fewer); %d threads, %lld rounds x %lld repeats, BN folded\n",
                argv[1], ma / 1e6, argv[2], mb / 1e6, ma / mb, threads, static_cast<long long>(rounds),
                static_cast<long long>(repeats));
    const bool verbose = std::getenv("VERBOSE") && std::string(std::getenv("VERBOSE")) == "1";
    std::printf("%-6s %-6s %7s %12s %12s %9s %14s\n", "batch", "mode", "thr", "original ms", "pruned ms",
                "speed-up", "goal (0.8x)");
    for (int64_t batch : {1, 64}) {
      for (bool tuned : {false, true}) {
        std::string thr = std::to_string(threads);
        if (tuned) {
          auto ta = tune_deployment(a, batch), tb = tune_deployment(b, batch);
          auto tag = [](const DeployTuning& t) {
            return std::to_string(t.threads()) + (t.chosen.tuned_kernels ? "t" : "a");
          };
          thr = tag(ta) + "/" + tag(tb);
          if (verbose)
            std::printf("original, %s\n%spruned, %s\n%s", deploy_tuning_line(ta).c_str(),
                        conv_tuning_table(ta.kernels).c_str(), deploy_tuning_line(tb).c_str(),
                        conv_tuning_table(tb.kernels).c_str());
        }
        auto ms = alternating_latency({&a, &b}, batch, rounds, repeats);
        const double sp = ms[0] / ms[1];
        std::printf("%-6lld %-6s %7s %12.3f %12.3f %8.2fx %9.2fx %s\n", static_cast<long long>(batch),
                    tuned ? "tuned" : "auto", thr.c_str(), ms[0], ms[1], sp, 0.8 * ma / mb,
                    sp >= 0.8 * ma / mb ? "met" : "not met");
        std::fflush(stdout);
        reset_conv_kernels(a);
        reset_conv_kernels(b);
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_prune_latency: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
