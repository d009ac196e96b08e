#include "nnopt/deploy/profile.h"

#include <algorithm>
#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/nn/checkpoint.h"

namespace nnopt {

namespace {
double median_of_sorted(const std::vector<double>& v) {
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}
}  // namespace

Latency time_forward(const std::function<void()>& fn, int64_t batch, const LatencyOptions& opt) {
  NNOPT_CHECK(opt.repeats >= 1, ValueError, "latency repeats must be >= 1, got ", opt.repeats);
  NNOPT_CHECK(opt.warmup >= 0, ValueError, "latency warmup must be >= 0, got ", opt.warmup);
  for (int64_t i = 0; i < opt.warmup; ++i) fn();
  std::vector<double> ms;
  double start = now_seconds();
  for (int64_t i = 0; i < opt.repeats; ++i) {
    double t0 = now_seconds();
    fn();
    ms.push_back(1000.0 * (now_seconds() - t0));
    if (i >= 2 && now_seconds() - start > opt.max_seconds) break;
  }
  std::sort(ms.begin(), ms.end());
  auto q = [&](double f) { return ms[std::min(ms.size() - 1, static_cast<size_t>(f * ms.size()))]; };
  Latency l;
  l.batch = batch;
  l.median_ms = median_of_sorted(ms);
  l.p10_ms = q(0.1);
  l.p90_ms = q(0.9);
  l.repeats = static_cast<int64_t>(ms.size());
  l.threads = threads();
  return l;
}

std::vector<double> alternating_medians(const std::vector<std::function<double()>>& measure, int64_t rounds) {
  NNOPT_CHECK(rounds >= 1, ValueError, "alternating rounds must be >= 1, got ", rounds);
  std::vector<std::vector<double>> runs(measure.size());
  for (int64_t r = 0; r < rounds; ++r)
    for (size_t i = 0; i < measure.size(); ++i) runs[i].push_back(measure[i]());
  std::vector<double> out;
  for (auto& v : runs) {
    std::sort(v.begin(), v.end());
    out.push_back(median_of_sorted(v));
  }
  return out;
}

std::vector<double> alternating_forward_latency(const std::vector<ForwardFn>& forwards,
                                                const std::vector<int64_t>& input_shape, int64_t batch,
                                                int64_t rounds, const LatencyOptions& opt) {
  NNOPT_CHECK(!forwards.empty(), ValueError, "latency: no models to time");
  NNOPT_CHECK(batch >= 1, ValueError, "latency batch must be >= 1, got ", batch);
  std::vector<int64_t> shape{batch};
  shape.insert(shape.end(), input_shape.begin(), input_shape.end());
  torch::NoGradGuard ng;
  const torch::Tensor x = torch::randn(shape);
  std::vector<std::function<double()>> measure;
  for (const ForwardFn& f : forwards)
    measure.push_back([&f, &x, batch, &opt] { return time_forward([&] { f(x); }, batch, opt).median_ms; });
  return alternating_medians(measure, rounds);
}

Latency measure_latency(GraphModule& model, int64_t batch, const LatencyOptions& opt) {
  NNOPT_CHECK(batch >= 1, ValueError, "latency batch must be >= 1, got ", batch);
  bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard ng;
  std::vector<int64_t> shape{batch};
  for (auto d : model->graph().input_shape()) shape.push_back(d);
  auto x = torch::randn(shape);
  Latency l = time_forward([&] { model->forward(x); }, batch, opt);
  if (model->run_threads() > 0) l.threads = model->run_threads();
  model->train(was_training);
  return l;
}

ModelProfile profile_model(GraphModule& model, const std::vector<int64_t>& batches,
                           const LatencyOptions& opt) {
  ModelProfile p;
  p.params = model->graph().num_params();
  p.macs = model->graph().macs();
  Checkpoint ck;
  ck.graph = model->graph();
  ck.tensors = model->state();
  p.size_bytes = static_cast<int64_t>(checkpoint_bytes(ck).size());
  for (auto b : batches) p.latency.push_back(measure_latency(model, b, opt));
  return p;
}

std::string ModelProfile::to_json() const {
  nlohmann::json lat = nlohmann::json::array();
  for (const auto& l : latency)
    lat.push_back({{"batch", l.batch},
                   {"median_ms", l.median_ms},
                   {"p10_ms", l.p10_ms},
                   {"p90_ms", l.p90_ms},
                   {"repeats", l.repeats},
                   {"threads", l.threads},
                   {"images_per_sec", l.images_per_sec()}});
  return nlohmann::json{{"params", params}, {"macs", macs}, {"size_bytes", size_bytes}, {"latency", lat}}
      .dump();
}

std::string ModelProfile::to_table() const {
  std::ostringstream os;
  os << std::fixed;
  os << "parameters   " << params << " (" << std::setprecision(3) << params / 1e6 << " M)\n";
  os << "MACs         " << macs << " (" << std::setprecision(2) << macs / 1e6 << " M per sample)\n";
  os << "size         " << size_bytes << " bytes (" << std::setprecision(2) << size_bytes / 1048576.0
     << " MiB on disk)\n";
  for (const auto& l : latency)
    os << "latency b=" << std::left << std::setw(4) << l.batch << std::right << std::setprecision(3)
       << l.median_ms << " ms median (p10 " << l.p10_ms << ", p90 " << l.p90_ms << ", "
       << l.repeats << " runs, " << l.threads << " threads, " << std::setprecision(0)
       << l.images_per_sec() << " img/s)\n";
  return os.str();
}

}  // namespace nnopt
