// Per-conv latency lookup table; see latency_table.h.
#include "nnopt/prune/latency_table.h"

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/nn/graph_module.h"

namespace nnopt {

void ConvLatencyTable::Options::validate() const {
  NNOPT_CHECK(batch() >= 1, ValueError, "latency table: batch must be >= 1, got ", batch());
  NNOPT_CHECK(rounds() >= 1, ValueError, "latency table: rounds must be >= 1, got ", rounds());
  NNOPT_CHECK(repeats() >= 3, ValueError, "latency table: repeats must be >= 3, got ", repeats());
}

namespace {
int64_t activations(const Graph& g) {
  int64_t n = 0;
  for (const auto& node : g.nodes()) {
    int64_t e = 1;
    for (auto d : node.shape) e *= d;
    n += e;
  }
  return n;
}
}  // namespace

ConvLatencyTable::ConvLatencyTable(const DependencyGraph& deps, const Options& opt)
    : ConvLatencyTable(deps, opt, true) {}

ConvLatencyTable::ConvLatencyTable(const DependencyGraph& deps, const Options& opt, bool measure)
    : deps_(deps), opt_(opt) {
  opt_.validate();
  full_act_ = activations(deps.graph());
  if (!measure) return;
  GraphModule m0(deps.graph());
  m0->eval();
  GraphModule m = fold_batch_norm(m0);
  m->eval();
  tune_conv_kernels(m, opt_.batch(), opt_.rounds(), opt_.repeats());
  LatencyOptions lo;
  lo.repeats = opt_.repeats() * opt_.rounds();
  full_ms_ = measure_latency(m, opt_.batch(), lo).median_ms;
  rest_ms_ = std::max(0.0, full_ms_ - conv_sum(deps.graph()));
}

nlohmann::json ConvLatencyTable::to_json() const {
  nlohmann::json shapes = nlohmann::json::array();
  for (const auto& [key, ms] : memo_) shapes.push_back({{"key", key}, {"ms", ms}});
  return {{"kind", "conv latency table"},
          {"batch", opt_.batch()},
          {"rounds", opt_.rounds()},
          {"repeats", opt_.repeats()},
          {"threads", torch::get_num_threads()},
          {"activations", full_act_},
          {"full_ms", full_ms_},
          {"rest_ms", rest_ms_},
          {"shapes", shapes}};
}

ConvLatencyTable ConvLatencyTable::from_json(const DependencyGraph& deps, const nlohmann::json& j) {
  NNOPT_CHECK(j.is_object() && j.value("kind", "") == "conv latency table", ValueError,
              "latency table: the JSON is not a conv latency table (no \"kind\": \"conv latency table\")");
  try {
    Options o = Options().batch(j.at("batch").get<int64_t>()).rounds(j.at("rounds").get<int64_t>())
                    .repeats(j.at("repeats").get<int64_t>());
    ConvLatencyTable t(deps, o, false);
    NNOPT_CHECK(j.at("activations").get<int64_t>() == t.full_act_, ValueError,
                "latency table: the table is of another model (", j.at("activations").get<int64_t>(),
                " activations, this model has ", t.full_act_, ")");
    t.full_ms_ = j.at("full_ms").get<double>();
    t.rest_ms_ = j.at("rest_ms").get<double>();
    NNOPT_CHECK(t.full_ms_ > 0 && t.rest_ms_ >= 0, ValueError, "latency table: full_ms ", t.full_ms_,
                " or rest_ms ", t.rest_ms_, " out of range");
    for (const auto& e : j.at("shapes")) {
      auto key = e.at("key").get<std::vector<int64_t>>();
      NNOPT_CHECK(key.size() == 13, ValueError, "latency table: a shape key has ", key.size(),
                  " entries, expected 13");
      t.memo_[key] = e.at("ms").get<double>();
    }
    return t;
  } catch (const nlohmann::json::exception& e) {
    throw ValueError(str_cat("latency table: malformed JSON: ", e.what()));
  }
}

double ConvLatencyTable::conv_ms(const Node& n, const Graph& g) {
  const auto& a = n.as<Conv2dAttrs>();
  const Shape& in = g.node(n.inputs.at(0)).shape;  // [C, H, W]
  NNOPT_CHECK(in.size() == 3, ValueError, "latency table: conv '", n.name, "' input is not [C, H, W]");
  std::vector<int64_t> key{a.in_channels, a.out_channels, in[1], in[2], a.kernel[0], a.kernel[1], a.stride[0],
                           a.stride[1], a.padding[0], a.padding[1], a.dilation[0], a.dilation[1], a.groups};
  auto it = memo_.find(key);
  if (it != memo_.end()) return it->second;
  torch::NoGradGuard ng;
  auto x = torch::randn({opt_.batch(), a.in_channels, in[1], in[2]});
  auto w = torch::randn({a.out_channels, a.in_channels / a.groups, a.kernel[0], a.kernel[1]});
  auto b = torch::randn({a.out_channels});
  ConvKernelTiming t = time_conv_kernels(x, w, b, a, opt_.rounds(), opt_.repeats());
  const double ms = t.chosen == ConvKernel::kNative ? t.native_ms : t.onednn_ms;
  memo_[key] = ms;
  return ms;
}

double ConvLatencyTable::conv_sum(const Graph& g) {
  double s = 0;
  for (const auto& n : g.nodes())
    if (n.op == OpKind::kConv2d) s += conv_ms(n, g);
  return s;
}

double ConvLatencyTable::predict(const ChannelPlan& plan) {
  Graph g = prune_graph(deps_, plan);
  const double act = full_act_ > 0 ? static_cast<double>(activations(g)) / full_act_ : 1.0;
  return conv_sum(g) + rest_ms_ * act;
}

}  // namespace nnopt
