// The registry of distillation losses, loss specs and small shared helpers.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/distill/attention_loss.h"
#include "nnopt/distill/distill_loss.h"
#include "nnopt/distill/hint_loss.h"
#include "nnopt/distill/kd_loss.h"
#include "nnopt/distill/similarity_loss.h"

namespace nnopt {

namespace {


std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

DistillLossPtr make_kd(const LossSpec& spec) {
  detail::check_spec_keys(spec, {"T", "temperature", "alpha"});
  NNOPT_CHECK(spec.taps.empty(), ValueError, "kd compares logits and takes no tap pairs");
  KdOptions o;
  for (const auto& [k, v] : spec.params) {
    double x = detail::spec_number("kd", k, v);
    if (k == "alpha") o.alpha(x); else o.temperature(x);
  }
  return std::make_shared<KdLoss>(o);
}

DistillLossPtr make_hint(const LossSpec& spec) {
  detail::check_spec_keys(spec, {"weight"});
  HintOptions o;
  for (const auto& [k, v] : spec.params) o.weight(detail::spec_number("hint", k, v));
  return std::make_shared<HintLoss>(spec.taps, o);
}

DistillLossPtr make_at(const LossSpec& spec) {
  detail::check_spec_keys(spec, {"beta", "p", "form"});
  AtOptions o;
  for (const auto& [k, v] : spec.params) {
    if (k == "form") o.form(v);
    else if (k == "beta") o.beta(detail::spec_number("at", k, v));
    else o.p(detail::spec_number("at", k, v));
  }
  return std::make_shared<AtLoss>(spec.taps, o);
}

DistillLossPtr make_sp(const LossSpec& spec) {
  detail::check_spec_keys(spec, {"gamma"});
  SpOptions o;
  for (const auto& [k, v] : spec.params) o.gamma(detail::spec_number("sp", k, v));
  return std::make_shared<SpLoss>(spec.taps, o);
}

std::map<std::string, DistillLossFactory>& registry() {
  static std::map<std::string, DistillLossFactory> r = {
      {"kd", make_kd}, {"hint", make_hint}, {"at", make_at}, {"sp", make_sp}};
  return r;
}

}  // namespace

TapPair parse_tap_pair(const std::string& text, const std::string& what) {
  size_t p = text.find(':');
  NNOPT_CHECK(p != std::string::npos && p > 0 && p + 1 < text.size() &&
                  text.find(':', p + 1) == std::string::npos,
              ValueError, what, ": '", text, "' is not teacher_tap:student_tap");
  return {trim(text.substr(0, p)), trim(text.substr(p + 1))};
}

std::string LossSpec::to_string() const {
  std::string s = name;
  for (size_t i = 0; i < params.size(); ++i)
    s += (i ? "," : ":") + params[i].first + "=" + params[i].second;
  return s;
}

LossSpec parse_loss_spec(const std::string& text) {
  LossSpec spec;
  size_t colon = text.find(':');
  spec.name = trim(text.substr(0, colon));
  NNOPT_CHECK(!spec.name.empty(), ValueError, "loss spec '", text,
              "': no loss name (expected name[:key=value,...], e.g. kd:T=4,alpha=0.9)");
  if (colon == std::string::npos) return spec;
  std::string rest = text.substr(colon + 1);
  size_t start = 0;
  while (start <= rest.size()) {
    size_t comma = rest.find(',', start);
    std::string part = rest.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    size_t eq = part.find('=');
    NNOPT_CHECK(eq != std::string::npos, ValueError, "loss spec '", text, "': '", part,
                "' is not key=value");
    std::string key = trim(part.substr(0, eq)), value = trim(part.substr(eq + 1));
    NNOPT_CHECK(!key.empty() && !value.empty(), ValueError, "loss spec '", text, "': '", part,
                "' needs a key and a value");
    for (const auto& kv : spec.params)
      NNOPT_CHECK(kv.first != key, ValueError, "loss spec '", text, "': key '", key,
                  "' is given twice");
    spec.params.emplace_back(key, value);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return spec;
}

void register_distill_loss(const std::string& name, DistillLossFactory factory) {
  NNOPT_CHECK(!name.empty(), ValueError, "register_distill_loss: empty name");
  NNOPT_CHECK(factory, ValueError, "register_distill_loss: no factory for '", name, "'");
  NNOPT_CHECK(!registry().count(name), ValueError, "distillation loss '", name,
              "' is already registered (known: ", join(distill_loss_names()), ")");
  registry()[name] = std::move(factory);
}

DistillLossPtr make_distill_loss(const LossSpec& spec) {
  auto it = registry().find(spec.name);
  NNOPT_CHECK(it != registry().end(), ValueError, "unknown distillation loss '", spec.name,
              "' (known: ", join(distill_loss_names()), ")");
  DistillLossPtr loss = it->second(spec);
  NNOPT_CHECK(loss, ValueError, "distillation loss '", spec.name, "': factory returned nothing");
  return loss;
}

std::vector<std::string> distill_loss_names() {
  std::vector<std::string> names;
  for (const auto& kv : registry()) names.push_back(kv.first);
  return names;  // std::map keeps them sorted
}

namespace detail {

void check_spec_keys(const LossSpec& spec, const std::vector<std::string>& keys) {
  for (const auto& kv : spec.params)
    NNOPT_CHECK(std::find(keys.begin(), keys.end(), kv.first) != keys.end(), ValueError,
                spec.name, ": unknown option '", kv.first, "' (known: ", join(keys), ")");
}

double spec_number(const std::string& loss, const std::string& key, const std::string& value) {
  char* end = nullptr;
  double x = std::strtod(value.c_str(), &end);
  NNOPT_CHECK(!value.empty() && end == value.c_str() + value.size() && std::isfinite(x),
              ValueError, loss, ": option ", key, " must be a number, got '", value, "'");
  return x;
}

void check_tap(const std::string& loss, const Graph& graph, const std::string& tap,
               const std::string& which) {
  if (graph.contains(tap)) return;
  std::vector<std::string> names;
  for (const auto& n : graph.nodes()) names.push_back(n.name);
  throw GraphError(str_cat(loss, ": tap '", tap, "' does not exist in the ", which, " (nodes: ",
                           join(names), ")"));
}

torch::Tensor pool_to(const torch::Tensor& x, int64_t h, int64_t w) {
  if (x.size(2) == h && x.size(3) == w) return x;
  return torch::adaptive_avg_pool2d(x, {h, w});
}

const torch::Tensor& tap_value(const TensorMap* taps, const std::string& name,
                               const std::string& which) {
  NNOPT_CHECK(taps, ValueError, "distillation: no ", which, " taps were computed");
  auto it = taps->find(name);
  NNOPT_CHECK(it != taps->end() && it->second.defined(), ValueError, "distillation: the ", which,
              " output of tap '", name, "' was not computed");
  return it->second;
}

}  // namespace detail

}  // namespace nnopt
