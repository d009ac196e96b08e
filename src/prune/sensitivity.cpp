#include "nnopt/prune/sensitivity.h"

#include <algorithm>
#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

namespace {

// The `n` lowest finite scores of a group, sorted by index.
std::vector<int64_t> lowest(const torch::Tensor& scores, int64_t n) {
  auto s = scores.to(torch::kDouble).contiguous();
  const double* p = s.data_ptr<double>();
  std::vector<int64_t> idx;
  for (int64_t i = 0; i < s.numel(); ++i)
    if (std::isfinite(p[i])) idx.push_back(i);
  std::stable_sort(idx.begin(), idx.end(), [p](int64_t a, int64_t b) { return p[a] < p[b]; });
  idx.resize(std::min<size_t>(idx.size(), static_cast<size_t>(std::max<int64_t>(n, 0))));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

ChannelPlan plan_from_ratios(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                             const std::map<std::string, double>& ratios, const ChannelPlannerOptions& opt) {
  opt.validate();
  NNOPT_CHECK(scores.size() == deps.groups().size(), ValueError, "plan_from_ratios: ", scores.size(),
              " score tensors for ", deps.groups().size(), " groups");
  ChannelPlan plan;
  for (const auto& [name, r] : ratios) {
    size_t gi = deps.group_index(name);
    NNOPT_CHECK(r >= 0 && r < 1, ValueError, "plan_from_ratios: ratio of group '", name,
                "' must be in [0, 1), got ", r);
    const auto& g = deps.groups()[gi];
    int64_t finite = torch::isfinite(scores[gi]).sum().item<int64_t>();
    int64_t cap = std::min<int64_t>(static_cast<int64_t>(std::floor(opt.max_group_ratio() * finite)), g.size() - 1);
    int64_t n = std::min<int64_t>(static_cast<int64_t>(std::floor(r * g.size() + 1e-9)), std::max<int64_t>(cap, 0));
    int64_t m = opt.channel_multiple();
    if (m > 1 && n > 0) n = g.size() - std::min(g.size(), (g.size() - n + m - 1) / m * m);
    if (n > 0) plan.remove[name] = lowest(scores[gi], n);
  }
  return plan;
}

std::vector<SensitivityRow> channel_sensitivity(GraphModule& model, const DependencyGraph& deps,
                                                const std::vector<torch::Tensor>& scores, const Dataset& data,
                                                const std::vector<double>& ratios, int64_t batch_size) {
  NNOPT_CHECK(!ratios.empty(), ValueError, "sensitivity: no ratios given");
  for (double r : ratios)
    NNOPT_CHECK(r > 0 && r < 1, ValueError, "sensitivity: ratio must be in (0, 1), got ", r);
  NNOPT_CHECK(data.size() > 0, ValueError, "sensitivity: the data are empty");
  const double macs = static_cast<double>(deps.graph().macs());
  std::vector<SensitivityRow> rows;
  SensitivityRow base;
  base.accuracy = evaluate(model, data, batch_size).accuracy;
  rows.push_back(base);
  // Every ratio may go up to size - 1 channels here: the analysis probes.
  ChannelPlannerOptions probe = ChannelPlannerOptions().max_group_ratio(0.999);
  for (const auto& g : deps.groups()) {
    for (double r : ratios) {
      ChannelPlan plan = plan_from_ratios(deps, scores, {{g.name, r}}, probe);
      SensitivityRow row;
      row.group = g.name;
      row.ratio = r;
      row.removed = plan.count();
      if (row.removed == 0) {
        row.accuracy = base.accuracy;
      } else {
        GraphModule small = prune_channels(model, deps, plan);
        row.accuracy = evaluate(small, data, batch_size).accuracy;
        row.macs_removed = 1.0 - static_cast<double>(small->graph().macs()) / macs;
      }
      rows.push_back(row);
    }
  }
  return rows;
}

std::map<std::string, double> ratios_from_sensitivity(const std::vector<SensitivityRow>& rows, double max_drop) {
  NNOPT_CHECK(max_drop >= 0, ValueError, "sensitivity: max_drop must be >= 0, got ", max_drop);
  double base = NAN;
  for (const auto& r : rows)
    if (r.group.empty()) base = r.accuracy;
  NNOPT_CHECK(!std::isnan(base), ValueError, "sensitivity: the rows have no baseline (group \"\")");
  std::map<std::string, double> out;
  for (const auto& r : rows) {
    if (r.group.empty()) continue;
    double& best = out[r.group];
    if (base - r.accuracy <= max_drop + 1e-12) best = std::max(best, r.ratio);
  }
  return out;
}

}  // namespace nnopt
