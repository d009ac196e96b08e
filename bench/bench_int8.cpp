// W8A8 post-training quantization lowered to the onednn int8 kernels, side by
// side with fp32 (batch norm folded) and the fake-quant model, in one run:
//   * latency at batch 1 and 64 (median) on THREADS threads; and tuned as
//     deployed: fp32 with each conv on its faster kernel and the faster thread
//     count (tune_deployment, deploy/conv_tuning.h), int8 on its faster thread
//     count ("(1t)": one thread);
//   * with a checkpoint: accuracy of fp32 / fake-quant / int8 on the
//     Fashion-MNIST test set and the int8-vs-fake-quant top-1 agreement and
//     max |logit diff|.
//   Every latency is the median of ROUNDS alternating rounds (each column
//   timed once per round, in turn), so a slow spell of the machine falls on
//   all columns alike.
// Usage: bench_int8 [MODEL | CHECKPOINT.nnopt] [THREADS=0 (all cores)] [REPEATS=30] [ROUNDS=5]
//        (NNOPT_PROFILE=PREFIX: also writes profiler traces, see below)
// A model name gives random weights (latency only) on Fashion-MNIST's shape.
#include <torch/csrc/autograd/profiler_legacy.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <iostream>
#include <string>

#include "nnopt/core/runtime.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/deploy/int8.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/quant/attach.h"

namespace {
bool ends_with(const std::string& s, const std::string& t) {
  return s.size() >= t.size() && s.compare(s.size() - t.size(), t.size(), t) == 0;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace nnopt;
  try {
    const std::string what = argc > 1 ? argv[1] : "resnet20";
    const int threads = set_threads(argc > 2 ? std::stoi(argv[2]) : 0);
    LatencyOptions lo;
    lo.repeats = argc > 3 ? std::stoll(argv[3]) : 30;
    lo.max_seconds = 5;
    const int64_t rounds = argc > 4 ? std::stoll(argv[4]) : 5;
    if (lo.repeats < 3 || rounds < 1) throw std::invalid_argument("REPEATS must be >= 3 and ROUNDS >= 1");
    seed_everything(0);
    const bool trained = ends_with(what, ".nnopt");
    GraphModule m = trained ? load_model(what) : GraphModule(build_model(what, ModelOptions{}));
    m->eval();
    Dataset calib, test;
    if (trained) {
      calib = load_dataset(DatasetOptions{}, true);
      test = load_dataset(DatasetOptions{}, false);
    } else {
      calib = make_synthetic(256, m->graph().input_shape(), 10, 1);
    }
    GraphModule fp = fold_batch_norm(m);
    fp->eval();
    GraphModule fq = fold_batch_norm(m);
    attach_quantizers(fq, QuantConfig());  // s8 symmetric per-channel weights, u8 affine activations
    const double t0 = now_seconds();
    calibrate(fq, calib, 8, 64);
    fq->eval();
    const double t1 = now_seconds();
    Int8Model q = lower_to_int8(fq);
    const double t2 = now_seconds();
    std::printf("%s, %d threads, engine onednn; calibration %.2f s (8 x 64 images), lowering %.3f s\n",
                what.c_str(), threads, t1 - t0, t2 - t1);
    const auto sat = q.saturating_layers();
    std::printf("exact int32 accumulation: %s\n",
                sat.empty() ? "yes"
                            : (std::to_string(sat.size()) +
                               " layers may saturate int16 pair sums (CPU without VNNI)").c_str());

    if (trained) {
      torch::NoGradGuard ng;
      int64_t n = test.size(), agree = 0, correct_fp = 0, correct_fq = 0, correct_q = 0;
      double max_diff = 0;
      for (int64_t b = 0; b < n; b += 500) {
        auto x = test.images.slice(0, b, std::min(n, b + 500));
        auto yl = test.labels.slice(0, b, std::min(n, b + 500));
        auto a = fp->forward(x), f = fq->forward(x), i = q.forward(x);
        correct_fp += a.argmax(1).eq(yl).sum().item<int64_t>();
        correct_fq += f.argmax(1).eq(yl).sum().item<int64_t>();
        correct_q += i.argmax(1).eq(yl).sum().item<int64_t>();
        agree += i.argmax(1).eq(f.argmax(1)).sum().item<int64_t>();
        max_diff = std::max(max_diff, (i - f).abs().max().item<double>());
      }
      std::printf("test set %lld images: accuracy fp32 %.2f %%, fake-quant %.2f %%, int8 %.2f %%\n",
                  static_cast<long long>(n), 100.0 * correct_fp / n, 100.0 * correct_fq / n,
                  100.0 * correct_q / n);
      double out_scale = 0;
      for (const auto& s : q.steps())
        if (s.node == q.graph().output()) out_scale = s.scale;
      std::printf("int8 vs fake-quant: top-1 agreement %.2f %%, max |logit diff| %.4f"
                  " (%.1f steps of the output scale %.4f)\n",
                  100.0 * agree / n, max_diff, max_diff / out_scale, out_scale);
    }

    std::printf("latency: medians of %lld alternating rounds of %lld runs each\n", static_cast<long long>(rounds),
                static_cast<long long>(lo.repeats));
    std::printf("%-6s %12s %13s %12s %10s %15s %15s %16s\n", "batch", "fp32 ms", "fakequant ms", "int8 ms",
                "fp32/int8", "fp32 tuned ms", "int8 tuned ms", "tuned fp32/int8");
    GraphModule ft = fold_batch_norm(m);  // fp32 as deployed: kernels and threads tuned per batch
    ft->eval();
    const auto& shape = m->graph().input_shape();
    for (int64_t batch : {1, 64}) {
      std::vector<int64_t> sz{batch};
      sz.insert(sz.end(), shape.begin(), shape.end());
      auto x = torch::randn(sz);
      torch::NoGradGuard ng;
      const DeployTuning dt = tune_deployment(ft, batch);
      auto timed = [&](const std::function<void()>& fn) { return time_forward(fn, batch, lo).median_ms; };
      // fp32, fake-quant, int8 on all threads, tuned fp32, then int8 on
      // 1 .. threads-1 threads: every one in each round, in turn.
      std::vector<std::function<double()>> measure{[&] { return timed([&] { fp->forward(x); }); },
                                                   [&] { return timed([&] { fq->forward(x); }); },
                                                   [&] { return timed([&] { q.forward(x); }); },
                                                   [&] { return timed([&] { ft->forward(x); }); }};
      for (int n = 1; n < threads; ++n)
        measure.push_back([&, n] {
          ScopedRunThreads scope(n);
          return timed([&] { q.forward(x); });
        });
      const std::vector<double> ms = alternating_medians(measure, rounds);
      double int8_best = ms[2];
      int int8_threads = threads;
      for (int n = 1; n < threads; ++n)
        if (ms[3 + n] < int8_best) int8_best = ms[3 + n], int8_threads = n;
      std::printf("%-6lld %12.3f %13.3f %12.3f %9.2fx %10.3f (%dt) %10.3f (%dt) %15.2fx\n",
                  static_cast<long long>(batch), ms[0], ms[1], ms[2], ms[0] / ms[2], ms[3], dt.threads(),
                  int8_best, int8_threads, ms[3] / int8_best);
      // NNOPT_PROFILE=PREFIX: 20 more runs of tuned fp32 and of int8 (on its
      // faster thread count) under LibTorch's profiler, a chrome trace each
      // (PREFIX{fp32,int8}_b<batch>.json).
      if (const char* prof = std::getenv("NNOPT_PROFILE")) {
        const std::string b = "_b" + std::to_string(batch) + ".json";
        {
          torch::autograd::profiler::RecordProfile guard(prof + ("fp32" + b));
          for (int r = 0; r < 20; ++r) ft->forward(x);
        }
        ScopedRunThreads scope(int8_threads);
        torch::autograd::profiler::RecordProfile guard(prof + ("int8" + b));
        for (int r = 0; r < 20; ++r) q.forward(x);
      }
    }
    std::printf("int8 weights %lld bytes; fp32 parameters %lld bytes\n",
                static_cast<long long>(q.weight_bytes()),
                static_cast<long long>(4 * fp->graph().num_params()));
  } catch (const std::exception& e) {
    std::cerr << "bench_int8: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
