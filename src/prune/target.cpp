#include "nnopt/prune/target.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/deploy/profile.h"

namespace nnopt {

const char* target_kind_name(TargetKind k) {
  switch (k) {
    case TargetKind::kSparsity: return "sparsity";
    case TargetKind::kParams: return "params";
    case TargetKind::kMacs: return "macs";
    case TargetKind::kLatency: return "latency";
  }
  return "?";
}

PruneTarget PruneTarget::parse(const std::string& text) {
  auto eq = text.find('=');
  NNOPT_CHECK(eq != std::string::npos, ValueError, "target '", text,
              "' must be KIND=VALUE with KIND sparsity, params, macs or latency (e.g. macs=0.5)");
  std::string kind = text.substr(0, eq), v = text.substr(eq + 1);
  PruneTarget t;
  if (kind == "sparsity") t.kind = TargetKind::kSparsity;
  else if (kind == "params") t.kind = TargetKind::kParams;
  else if (kind == "macs") t.kind = TargetKind::kMacs;
  else if (kind == "latency") t.kind = TargetKind::kLatency;
  else
    throw ValueError(str_cat("target '", text, "': unknown kind '", kind,
                             "' (known: sparsity, params, macs, latency)"));
  char* end = nullptr;
  t.value = std::strtod(v.c_str(), &end);
  NNOPT_CHECK(!v.empty() && end == v.c_str() + v.size() && std::isfinite(t.value), ValueError,
              "target '", text, "': '", v, "' is not a number");
  t.validate();
  return t;
}

std::string PruneTarget::to_string() const { return str_cat(target_kind_name(kind), "=", value); }

void PruneTarget::validate() const {
  if (kind == TargetKind::kLatency) {
    NNOPT_CHECK(value > 0, ValueError, "target ", to_string(), " must be > 0 ms");
  } else {
    NNOPT_CHECK(value >= 0 && value < 1, ValueError, "target ", to_string(),
                " must be in [0, 1) (the fraction removed; 1 would remove everything)");
  }
}

void ChannelPlannerOptions::validate() const {
  NNOPT_CHECK(max_group_ratio() > 0 && max_group_ratio() < 1, ValueError,
              "max_group_ratio must be in (0, 1), got ", max_group_ratio());
  NNOPT_CHECK(channel_multiple() >= 1, ValueError, "channel_multiple must be >= 1, got ",
              channel_multiple());
  NNOPT_CHECK(latency_batch() >= 1, ValueError, "latency_batch must be >= 1, got ", latency_batch());
  NNOPT_CHECK(latency_repeats() >= 3, ValueError, "latency_repeats must be >= 3, got ",
              latency_repeats());
}

namespace {

// Units of one group ordered by ascending score (finite ones only).
std::vector<int64_t> ascending(const torch::Tensor& s) {
  auto a = s.contiguous();
  const double* p = a.data_ptr<double>();
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::isfinite(p[i])) idx.push_back(i);
  std::stable_sort(idx.begin(), idx.end(), [p](int64_t x, int64_t y) { return p[x] < p[y]; });
  return idx;
}

// How many of K units may go: the cap, then kept rounded up to the multiple.
int64_t limit_removal(int64_t k, int64_t finite, int64_t want, const ChannelPlannerOptions& opt) {
  int64_t cap = std::min<int64_t>(static_cast<int64_t>(std::floor(opt.max_group_ratio() * finite)), k - 1);
  int64_t n = std::clamp<int64_t>(want, 0, std::max<int64_t>(cap, 0));
  int64_t m = opt.channel_multiple();
  if (m > 1 && n > 0) {
    int64_t kept = k - n;
    int64_t rounded = std::min(k, (kept + m - 1) / m * m);
    n = k - rounded;
  }
  return n;
}

}  // namespace

ChannelPlan plan_at_level(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                          double level, const ChannelPlannerOptions& opt) {
  opt.validate();
  NNOPT_CHECK(scores.size() == deps.groups().size(), ValueError, "planner: ", scores.size(),
              " score tensors for ", deps.groups().size(), " groups");
  NNOPT_CHECK(level >= 0 && level <= 1, ValueError, "planner: level must be in [0, 1], got ", level);
  const auto& groups = deps.groups();
  std::vector<std::vector<int64_t>> order(groups.size());
  std::vector<torch::Tensor> norm(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    NNOPT_CHECK(scores[g].numel() == groups[g].size(), ValueError, "planner: group '",
                groups[g].name, "' has ", groups[g].size(), " channels but ", scores[g].numel(),
                " scores");
    auto s = scores[g].to(torch::kDouble).contiguous();
    order[g] = ascending(s);
    // Global ranking compares score / mean(score of the group).
    double mean = 0;
    for (auto i : order[g]) mean += s.data_ptr<double>()[i];
    mean = order[g].empty() ? 1 : mean / order[g].size();
    norm[g] = s / (std::abs(mean) > 0 ? std::abs(mean) : 1.0);
  }
  std::vector<int64_t> want(groups.size(), 0);
  if (opt.global()) {
    std::vector<double> all;
    for (size_t g = 0; g < groups.size(); ++g)
      for (auto i : order[g]) all.push_back(norm[g].data_ptr<double>()[i]);
    std::sort(all.begin(), all.end());
    int64_t k = static_cast<int64_t>(std::floor(level * static_cast<double>(all.size())));
    if (k > 0) {
      double tau = all[k - 1];
      for (size_t g = 0; g < groups.size(); ++g)
        for (auto i : order[g])
          if (norm[g].data_ptr<double>()[i] <= tau) ++want[g];
    }
  } else {
    for (size_t g = 0; g < groups.size(); ++g)
      want[g] = static_cast<int64_t>(
          std::floor(level * opt.max_group_ratio() * static_cast<double>(order[g].size()) + 1e-9));
  }
  ChannelPlan plan;
  for (size_t g = 0; g < groups.size(); ++g) {
    int64_t n = limit_removal(groups[g].size(), static_cast<int64_t>(order[g].size()), want[g], opt);
    if (n <= 0) continue;
    std::vector<int64_t> v(order[g].begin(), order[g].begin() + n);
    std::sort(v.begin(), v.end());
    plan.remove[groups[g].name] = v;
  }
  return plan;
}

double plan_metric(const DependencyGraph& deps, const ChannelPlan& plan, TargetKind kind,
                   const ChannelPlannerOptions& opt) {
  switch (kind) {
    case TargetKind::kSparsity:
      return deps.num_units() ? static_cast<double>(plan.count()) / deps.num_units() : 0.0;
    case TargetKind::kParams: {
      Graph g = prune_graph(deps, plan);
      return 1.0 - static_cast<double>(g.num_params()) / deps.graph().num_params();
    }
    case TargetKind::kMacs: {
      Graph g = prune_graph(deps, plan);
      return 1.0 - static_cast<double>(g.macs()) / deps.graph().macs();
    }
    case TargetKind::kLatency: {
      GraphModule m(prune_graph(deps, plan));
      LatencyOptions lo;
      lo.warmup = 3;
      lo.repeats = opt.latency_repeats();
      return measure_latency(m, opt.latency_batch(), lo).median_ms;
    }
  }
  return 0;
}

ChannelSolution solve_channel_target(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                                     const PruneTarget& target, const ChannelPlannerOptions& opt) {
  target.validate();
  opt.validate();
  const bool latency = target.kind == TargetKind::kLatency;
  auto meets = [&](double v) { return latency ? v <= target.value : v >= target.value - 1e-12; };
  ChannelSolution hi;
  hi.level = 1.0;
  hi.plan = plan_at_level(deps, scores, 1.0, opt);
  hi.achieved = plan_metric(deps, hi.plan, target.kind, opt);
  if (!meets(hi.achieved)) {
    if (latency)
      throw ValueError(str_cat("latency budget ", target.value, " ms at batch ", opt.latency_batch(),
                               " is below the minimum ", hi.achieved,
                               " ms this model reaches with every group cut to max_group_ratio ",
                               opt.max_group_ratio()));
    throw ValueError(str_cat("target ", target.to_string(), " is out of reach: at most ", hi.achieved,
                             " with max_group_ratio ", opt.max_group_ratio(),
                             (opt.global() ? "" : " per layer")));
  }
  ChannelSolution lo;
  lo.level = 0;
  lo.plan = ChannelPlan();
  lo.achieved = plan_metric(deps, lo.plan, target.kind, opt);
  if (meets(lo.achieved)) return lo;
  // Invariant: lo misses, hi meets. Latency measurements are noisy: fewer steps.
  const int steps = latency ? 8 : 30;
  for (int i = 0; i < steps; ++i) {
    double mid = 0.5 * (lo.level + hi.level);
    ChannelSolution s;
    s.level = mid;
    s.plan = plan_at_level(deps, scores, mid, opt);
    if (s.plan.remove == hi.plan.remove) {  // nothing changes between mid and hi
      hi.level = mid;
      continue;
    }
    s.achieved = plan_metric(deps, s.plan, target.kind, opt);
    (meets(s.achieved) ? hi : lo) = s;
  }
  return hi;
}

}  // namespace nnopt
