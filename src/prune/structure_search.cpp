#include "nnopt/prune/structure_search.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <random>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"

namespace nnopt {

void StructureSearchOptions::validate() const {
  NNOPT_CHECK(colony() >= 2, ValueError, "structure search: colony must be >= 2, got ", colony());
  NNOPT_CHECK(cycles() >= 0, ValueError, "structure search: cycles must be >= 0, got ", cycles());
  NNOPT_CHECK(limit() >= 1, ValueError, "structure search: limit must be >= 1, got ", limit());
  NNOPT_CHECK(levels() >= 2, ValueError, "structure search: levels must be >= 2, got ", levels());
  NNOPT_CHECK(mutations() >= 1, ValueError, "structure search: mutations must be >= 1, got ", mutations());
  NNOPT_CHECK(max_macs_ratio() > 0 && max_macs_ratio() <= 1, ValueError,
              "structure search: max_macs_ratio must be in (0, 1], got ", max_macs_ratio());
}

namespace {
// Removes, in each group, all but keep[g] channels, lowest scores first.
ChannelPlan plan_from_counts(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                             const std::vector<int64_t>& keep) {
  const auto& groups = deps.groups();
  ChannelPlan plan;
  for (size_t g = 0; g < groups.size(); ++g) {
    const int64_t size = groups[g].size();
    if (keep[g] >= size) continue;
    auto order = std::get<1>(scores[g].to(torch::kDouble).sort(0, /*descending=*/false));  // ascending
    std::vector<int64_t> v(order.data_ptr<int64_t>(), order.data_ptr<int64_t>() + (size - keep[g]));
    std::sort(v.begin(), v.end());
    plan.remove[groups[g].name] = v;
  }
  return plan;
}
}  // namespace

ChannelPlan plan_for_structure(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                               const Structure& s, int64_t levels) {
  const auto& groups = deps.groups();
  NNOPT_CHECK(s.size() == groups.size() && scores.size() == groups.size(), ValueError,
              "structure search: structure has ", s.size(), " levels and ", scores.size(),
              " score tensors for ", groups.size(), " groups");
  std::vector<int64_t> keep(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    NNOPT_CHECK(s[g] >= 0 && s[g] <= levels, ValueError, "structure search: level ", s[g], " of group '",
                groups[g].name, "' is outside 0..", levels);
    NNOPT_CHECK(s[g] > 0 || groups[g].removable(), ValueError, "structure search: level 0 of group '",
                groups[g].name, "': only a residual branch's inner width can go to zero");
    const int64_t size = groups[g].size();
    keep[g] = s[g] == 0 ? 0 : std::max<int64_t>(1, (s[g] * size + levels - 1) / levels);
  }
  return plan_from_counts(deps, scores, keep);
}

ChannelPlan plan_keeping(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                         const std::map<std::string, int64_t>& keep) {
  const auto& groups = deps.groups();
  NNOPT_CHECK(scores.size() == groups.size(), ValueError, "channel counts: ", scores.size(),
              " score tensors for ", groups.size(), " groups");
  std::vector<int64_t> counts(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) counts[g] = groups[g].size();
  for (const auto& [name, k] : keep) {
    const size_t g = deps.group_index(name);  // ValueError listing the groups
    NNOPT_CHECK(k >= 0 && k <= groups[g].size(), ValueError, "channel counts: group '", name, "' has ",
                groups[g].size(), " channels, cannot keep ", k);
    NNOPT_CHECK(k > 0 || groups[g].removable(), ValueError, "channel counts: group '", name,
                "' cannot keep 0 channels: only a residual branch's inner width can go");
    counts[g] = k;
  }
  return plan_from_counts(deps, scores, counts);
}

std::map<std::string, int64_t> parse_channel_counts(const std::string& spec) {
  std::map<std::string, int64_t> keep;
  for (const std::string& item : split(spec, ',')) {
    const auto eq = item.find('=');
    NNOPT_CHECK(eq != std::string::npos && eq > 0, ValueError, "channel counts: '", item, "' is not GROUP=COUNT");
    const std::string v = item.substr(eq + 1);
    char* end = nullptr;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    NNOPT_CHECK(!v.empty() && end == v.c_str() + v.size() && n >= 0, ValueError, "channel counts: '", item,
                "': '", v, "' is not a channel count >= 0");
    NNOPT_CHECK(keep.emplace(item.substr(0, eq), n).second, ValueError, "channel counts: group '",
                item.substr(0, eq), "' is named twice");
  }
  return keep;
}

StructureSearchResult abc_structure_search(const DependencyGraph& deps, const std::vector<torch::Tensor>& scores,
                                           const StructureFitness& fitness, const StructureSearchOptions& opt,
                                           const std::vector<StructureBudget>& budgets) {
  opt.validate();
  for (const auto& b : budgets)
    NNOPT_CHECK(b.value != nullptr, ValueError, "structure search: budget '", b.name, "' has no value function");
  NNOPT_CHECK(fitness != nullptr, ValueError, "structure search: no fitness function");
  const size_t G = deps.groups().size();
  NNOPT_CHECK(G > 0, ValueError, "structure search: the model has no prunable channel groups");
  const int64_t L = opt.levels();
  const double base_macs = static_cast<double>(deps.graph().macs());
  std::mt19937_64 rng(opt.seed());
  auto uniform = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  auto pick = [&](int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(rng); };
  auto macs_ratio = [&](const Structure& s) {
    return static_cast<double>(prune_graph(deps, plan_for_structure(deps, scores, s, L)).macs()) / base_macs;
  };
  // Lowest level per group: 0 where the branch may go. Two branches joined
  // by one add may not both go, so such pairs keep level 1.
  Structure lowest(G, 1);
  if (opt.remove_blocks()) {
    std::map<std::string, int> joins;
    for (const auto& g : deps.groups())
      if (g.removable()) ++joins[g.branch_join];
    for (size_t g = 0; g < G; ++g) {
      const auto& grp = deps.groups()[g];
      if (grp.removable() && joins[grp.branch_join] == 1) lowest[g] = 0;
    }
  }
  double min_ratio = macs_ratio(lowest);
  NNOPT_CHECK(min_ratio <= opt.max_macs_ratio(), ValueError, "structure search: MAC budget ",
              opt.max_macs_ratio(), " is below the smallest structure's ", min_ratio);
  for (const auto& b : budgets) {
    const double v = b.value(plan_for_structure(deps, scores, lowest, L));
    NNOPT_CHECK(v <= b.max, ValueError, "structure search: ", b.name, " budget ", b.max,
                " is below the smallest structure's ", v);
  }
  auto fits = [&](const Structure& s) {
    if (macs_ratio(s) > opt.max_macs_ratio()) return false;
    if (budgets.empty()) return true;
    const ChannelPlan p = plan_for_structure(deps, scores, s, L);
    for (const auto& b : budgets)
      if (b.value(p) > b.max) return false;
    return true;
  };
  // Lower random groups until the structure fits every budget.
  auto repair = [&](Structure s) {
    while (!fits(s)) {
      std::vector<size_t> up;
      for (size_t g = 0; g < G; ++g)
        if (s[g] > lowest[g]) up.push_back(g);
      s[up[pick(static_cast<int64_t>(up.size()))]] -= 1;
    }
    return s;
  };
  // Raise random groups one level at a time while the structure still fits:
  // a random structure repaired down to the budget typically uses a third of
  // it (MACs fall with the product of neighbouring groups' fractions), and a
  // search that compares structures "at the same MACs" should start from
  // structures that use the budget.
  auto fill = [&](Structure s) {
    std::vector<size_t> order(G);
    for (size_t g = 0; g < G; ++g) order[g] = g;
    for (bool raised = true; raised;) {
      raised = false;
      std::shuffle(order.begin(), order.end(), rng);
      for (size_t g : order) {
        if (s[g] >= L || s[g] == 0) continue;  // a dropped branch stays dropped
        s[g] += 1;
        if (fits(s))
          raised = true;
        else
          s[g] -= 1;
      }
    }
    return s;
  };
  struct Source {
    Structure s;
    double fit = 0;
    int64_t trials = 0;
  };
  StructureSearchResult res;
  auto evaluate = [&](const Structure& s) {
    ++res.evaluations;
    return fitness(plan_for_structure(deps, scores, s, L));
  };
  auto random_source = [&]() {
    Source src;
    src.s.resize(G);
    for (size_t g = 0; g < G; ++g) src.s[g] = lowest[g] + pick(L - lowest[g] + 1);
    src.s = fill(repair(src.s));
    src.fit = evaluate(src.s);
    return src;
  };
  std::vector<Source> colony;
  for (int64_t i = 0; i < opt.colony(); ++i) colony.push_back(random_source());
  auto record_best = [&]() {
    for (const auto& c : colony)
      if (res.best.empty() || c.fit > res.best_fitness) {
        res.best = c.s;
        res.best_fitness = c.fit;
      }
    res.best_per_cycle.push_back(res.best_fitness);
  };
  record_best();
  auto try_neighbour = [&](size_t i) {
    Structure v = colony[i].s;
    for (int64_t m = 0; m < opt.mutations(); ++m) {
      size_t g = static_cast<size_t>(pick(static_cast<int64_t>(G)));
      size_t other = static_cast<size_t>(pick(static_cast<int64_t>(colony.size()) - 1));
      if (other >= i) ++other;
      double moved = v[g] + uniform(-1, 1) * static_cast<double>(v[g] - colony[other].s[g]);
      int64_t k = static_cast<int64_t>(std::llround(moved));
      if (k == v[g]) k += uniform(0, 1) < 0.5 ? -1 : 1;
      v[g] = std::clamp<int64_t>(k, lowest[g], L);
    }
    v = repair(v);
    double f = evaluate(v);
    if (f > colony[i].fit) {
      colony[i] = Source{v, f, 0};
    } else {
      ++colony[i].trials;
    }
  };
  for (int64_t c = 0; c < opt.cycles(); ++c) {
    for (size_t i = 0; i < colony.size(); ++i) try_neighbour(i);  // employed bees
    // Onlookers: fitness-proportional choice (shifted to be positive).
    double lo = colony[0].fit;
    for (const auto& s : colony) lo = std::min(lo, s.fit);
    std::vector<double> w;
    for (const auto& s : colony) w.push_back(s.fit - lo + 1e-9);
    std::discrete_distribution<size_t> choose(w.begin(), w.end());
    for (size_t n = 0; n < colony.size(); ++n) try_neighbour(choose(rng));
    for (auto& s : colony)  // scouts
      if (s.trials >= opt.limit()) s = random_source();
    record_best();
  }
  res.best_plan = plan_for_structure(deps, scores, res.best, L);
  res.best_macs_ratio = macs_ratio(res.best);
  for (const auto& b : budgets) res.budget_values.push_back(b.value(res.best_plan));
  return res;
}

}  // namespace nnopt
