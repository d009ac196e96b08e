#include "nnopt/deploy/conv_tuning.h"

#include <algorithm>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/core/table.h"
#include "nnopt/deploy/profile.h"

namespace nnopt {

std::string conv_kernel_name(ConvKernel k) {
  switch (k) {
    case ConvKernel::kOnednn: return "onednn";
    case ConvKernel::kNative: return "native";
    case ConvKernel::kAuto: break;
  }
  return "auto";
}

void reset_conv_kernels(GraphModule& model) {
  for (const auto& n : model->graph().nodes())
    if (n.op == OpKind::kConv2d) model->node_module(n.name).conv_kernel = ConvKernel::kAuto;
  model->set_run_threads(0);
}

ConvKernelTiming time_conv_kernels(const torch::Tensor& x0, const torch::Tensor& w0, const torch::Tensor& bias,
                                   const Conv2dAttrs& a, int64_t rounds, int64_t repeats) {
  NNOPT_CHECK(rounds >= 1, ValueError, "conv tuning rounds must be >= 1, got ", rounds);
  NNOPT_CHECK(repeats >= 1, ValueError, "conv tuning repeats must be >= 1, got ", repeats);
  torch::NoGradGuard ng;
  const torch::Tensor x = x0.contiguous(), w = w0.contiguous();
  const bool native_ok = a.groups == 1 && a.dilation[0] == 1 && a.dilation[1] == 1;
  const std::vector<int64_t> st{a.stride[0], a.stride[1]}, pad{a.padding[0], a.padding[1]},
      dil{a.dilation[0], a.dilation[1]};
  LatencyOptions lo;
  lo.warmup = 2;
  lo.repeats = repeats;
  const int64_t batch = x.size(0);
  auto run = [&](ConvKernel k) {
    if (k == ConvKernel::kNative)
      return time_forward([&] { at::thnn_conv2d(x, w, {w.size(2), w.size(3)}, bias, st, pad); }, batch, lo)
          .median_ms;
    return time_forward([&] { at::mkldnn_convolution(x, w, bias, pad, st, dil, a.groups); }, batch, lo)
        .median_ms;
  };
  std::vector<std::function<double()>> measure{[&] { return run(ConvKernel::kOnednn); }};
  if (native_ok) measure.push_back([&] { return run(ConvKernel::kNative); });
  const std::vector<double> ms = alternating_medians(measure, rounds);
  ConvKernelTiming t;
  t.onednn_ms = ms[0];
  t.native_ms = native_ok ? ms[1] : 0;
  t.chosen = native_ok && t.native_ms < t.onednn_ms ? ConvKernel::kNative : ConvKernel::kOnednn;
  return t;
}

std::vector<ConvKernelTiming> tune_conv_kernels(GraphModule& model, int64_t batch, int64_t rounds,
                                                int64_t repeats) {
  NNOPT_CHECK(batch >= 1, ValueError, "conv tuning batch must be >= 1, got ", batch);
  NNOPT_CHECK(rounds >= 1, ValueError, "conv tuning rounds must be >= 1, got ", rounds);
  NNOPT_CHECK(repeats >= 1, ValueError, "conv tuning repeats must be >= 1, got ", repeats);
  const Graph& g = model->graph();
  // The real input of every conv: one forward pass with taps on the conv inputs.
  std::vector<std::string> taps;
  for (const auto& n : g.nodes())
    if (n.op == OpKind::kConv2d) taps.push_back(n.inputs.at(0));
  std::sort(taps.begin(), taps.end());
  taps.erase(std::unique(taps.begin(), taps.end()), taps.end());
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard ng;
  std::vector<int64_t> shape{batch};
  for (auto d : g.input_shape()) shape.push_back(d);
  TensorMap inputs;
  reset_conv_kernels(model);
  model->forward(torch::randn(shape), taps, inputs);

  std::vector<ConvKernelTiming> out;
  for (const auto& n : g.nodes()) {
    if (n.op != OpKind::kConv2d) continue;
    NodeModuleImpl& m = model->node_module(n.name);
    ConvKernelTiming t = time_conv_kernels(inputs.at(n.inputs[0]), model->effective_weight(n.name), m.bias,
                                           n.as<Conv2dAttrs>(), rounds, repeats);
    t.node = n.name;
    m.conv_kernel = t.chosen;
    out.push_back(t);
  }
  model->train(was_training);
  return out;
}

DeployTuning tune_deployment(GraphModule& model, int64_t batch, int max_threads, int64_t rounds,
                             int64_t repeats) {
  NNOPT_CHECK(batch >= 1, ValueError, "deployment tuning batch must be >= 1, got ", batch);
  NNOPT_CHECK(rounds >= 1, ValueError, "deployment tuning rounds must be >= 1, got ", rounds);
  NNOPT_CHECK(repeats >= 3, ValueError, "deployment tuning repeats must be >= 3, got ", repeats);
  if (max_threads <= 0) max_threads = threads();
  const bool was_training = model->is_training();
  model->eval();
  // Per-conv kernels per thread count: the faster kernel of a layer can change with it.
  std::vector<std::vector<ConvKernelTiming>> kernels;
  for (int t = 1; t <= max_threads; ++t) {
    ScopedRunThreads scope(t);
    kernels.push_back(tune_conv_kernels(model, batch));
  }
  std::vector<DeployCandidate> cand;
  for (int t = 1; t <= max_threads; ++t)
    for (bool tuned : {false, true}) cand.push_back(DeployCandidate{t, tuned, 0});
  auto apply = [&](const DeployCandidate& c) {
    reset_conv_kernels(model);
    if (c.tuned_kernels)
      for (const auto& k : kernels[c.threads - 1]) model->node_module(k.node).conv_kernel = k.chosen;
    model->set_run_threads(c.threads);
  };
  LatencyOptions lo;
  lo.warmup = 3;
  lo.repeats = repeats;
  lo.max_seconds = 5;
  std::vector<std::function<double()>> measure;
  for (const DeployCandidate& c : cand)
    measure.push_back([&, c] {
      apply(c);
      return measure_latency(model, batch, lo).median_ms;
    });
  const std::vector<double> ms = alternating_medians(measure, rounds);
  DeployTuning out;
  out.batch = batch;
  size_t best = 0;
  for (size_t i = 0; i < cand.size(); ++i) {
    cand[i].ms = ms[i];
    if (cand[i].ms < cand[best].ms) best = i;
  }
  out.candidates = cand;
  out.chosen = cand[best];
  out.kernels = kernels[out.chosen.threads - 1];
  apply(out.chosen);
  model->train(was_training);
  return out;
}

std::string deploy_tuning_line(const DeployTuning& t) {
  std::string per;
  for (size_t i = 0; i < t.candidates.size(); ++i) {
    const auto& c = t.candidates[i];
    per += c.tuned_kernels ? str_cat(", tuned ", fmt(c.ms, 3))
                           : str_cat(i ? "; " : "", c.threads, " thr: auto ", fmt(c.ms, 3));
  }
  return str_cat("batch ", t.batch, ": ", t.chosen.threads, " thread(s), ",
                 t.chosen.tuned_kernels ? "tuned" : "auto", " kernels, ", fmt(t.chosen.ms, 3), " ms (", per, ")");
}

std::string conv_tuning_table(const std::vector<ConvKernelTiming>& t) {
  Table tab({"conv", "onednn ms", "native ms", "chosen"});
  double on = 0, nat = 0, best = 0;
  for (const auto& r : t) {
    tab.add_row({r.node, fmt(r.onednn_ms, 3), r.native_ms > 0 ? fmt(r.native_ms, 3) : "-",
                 conv_kernel_name(r.chosen)});
    on += r.onednn_ms;
    nat += r.native_ms > 0 ? r.native_ms : r.onednn_ms;
    best += r.chosen == ConvKernel::kNative ? r.native_ms : r.onednn_ms;
  }
  tab.add_row({"sum", fmt(on, 3), fmt(nat, 3), fmt(best, 3) + " tuned"});
  return tab.to_text();
}

}  // namespace nnopt
