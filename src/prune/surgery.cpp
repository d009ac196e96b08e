#include "nnopt/prune/surgery.h"

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>
#include <set>

#include "nnopt/core/error.h"

namespace nnopt {
using json = nlohmann::json;

int64_t ChannelPlan::count() const {
  int64_t n = 0;
  for (const auto& [g, v] : remove) n += static_cast<int64_t>(v.size());
  return n;
}

std::string ChannelPlan::to_json() const {
  json j = json::object();
  for (const auto& [g, v] : remove) j[g] = v;
  return json{{"remove", j}}.dump();
}

ChannelPlan ChannelPlan::from_json(const std::string& text) {
  ChannelPlan p;
  try {
    json j = json::parse(text);
    NNOPT_CHECK(j.is_object() && j.contains("remove") && j["remove"].is_object(), ValueError,
                "channel plan: expected {\"remove\": {group: [indices]}}");
    for (const auto& [g, v] : j["remove"].items()) {
      NNOPT_CHECK(v.is_array(), ValueError, "channel plan: group '", g, "' must hold a list of indices");
      for (const auto& i : v) {
        NNOPT_CHECK(i.is_number_integer(), ValueError, "channel plan: group '", g,
                    "' has a non-integer index ", i.dump());
        p.remove[g].push_back(i.get<int64_t>());
      }
    }
  } catch (const json::exception& e) {
    throw ValueError(str_cat("channel plan: not valid JSON: ", e.what()));
  }
  return p;
}

namespace {

struct Cuts {
  std::set<int64_t> out, in, bn;
};

bool is_depthwise(const Conv2dAttrs& a) {
  return a.groups > 1 && a.groups == a.in_channels && a.groups == a.out_channels;
}

// Node -> indices to remove per role, and the nodes of emptied residual
// branches with the adds they joined; checks the plan on the way.
struct Surgery {
  std::map<std::string, Cuts> cuts;
  std::set<std::string> dead;                 // nodes of emptied branches
  std::map<std::string, std::string> joins;   // add -> its operand that stays
};

Surgery collect_cuts(const DependencyGraph& deps, const ChannelPlan& plan) {
  Surgery s;
  auto& cuts = s.cuts;
  for (const auto& [name, idx] : plan.remove) {
    const DependencyGroup& g = deps.group(name);  // ValueError for unknown names
    std::set<int64_t> seen;
    for (auto u : idx) {
      NNOPT_CHECK(u >= 0 && u < g.size(), ValueError, "channel plan: group '", name, "' has ",
                  g.size(), " channels; index ", u, " is out of range");
      NNOPT_CHECK(seen.insert(u).second, ValueError, "channel plan: group '", name,
                  "' lists channel ", u, " twice");
      for (const auto& sl : g.units[u].slices) {
        Cuts& c = cuts[sl.node];
        (sl.role == SliceRole::kOut ? c.out : sl.role == SliceRole::kIn ? c.in : c.bn).insert(sl.index);
      }
    }
    if (g.removable() && static_cast<int64_t>(seen.size()) == g.size()) {
      s.dead.insert(g.branch_nodes.begin(), g.branch_nodes.end());
      const auto& ins = deps.graph().node(g.branch_join).inputs;
      bool first = std::find(g.branch_nodes.begin(), g.branch_nodes.end(), ins[0]) != g.branch_nodes.end();
      s.joins[g.branch_join] = first ? ins[1] : ins[0];
    }
  }
  for (const auto& [add, kept] : s.joins)
    NNOPT_CHECK(!s.dead.count(kept) && !s.dead.count(add), ValueError,
                "channel plan removes both operands of add '", add, "'");
  const Graph& graph = deps.graph();
  for (const auto& [node, c] : cuts) {
    if (s.dead.count(node)) continue;
    const Node& n = graph.node(node);
    int64_t out = 0, in = 0;
    if (n.op == OpKind::kConv2d) {
      out = n.as<Conv2dAttrs>().out_channels;
      in = is_depthwise(n.as<Conv2dAttrs>()) ? out : n.as<Conv2dAttrs>().in_channels;
    } else if (n.op == OpKind::kLinear) {
      out = n.as<LinearAttrs>().out_features;
      in = n.as<LinearAttrs>().in_features;
    } else {
      out = n.as<BatchNormAttrs>().num_features;
    }
    NNOPT_CHECK(static_cast<int64_t>(std::max(c.out.size(), c.bn.size())) < out &&
                    (in == 0 || static_cast<int64_t>(c.in.size()) < in),
                ValueError, "channel plan removes every channel of node '", node, "' (",
                op_name(n.op), ")");
  }
  return s;
}

torch::Tensor keep_index(int64_t n, const std::set<int64_t>& drop) {
  std::vector<int64_t> keep;
  keep.reserve(n - drop.size());
  for (int64_t i = 0; i < n; ++i)
    if (!drop.count(i)) keep.push_back(i);
  return torch::tensor(keep, torch::kLong);
}

}  // namespace

void check_plan(const DependencyGraph& deps, const ChannelPlan& plan) { (void)collect_cuts(deps, plan); }

Graph prune_graph(const DependencyGraph& deps, const ChannelPlan& plan) {
  Surgery s = collect_cuts(deps, plan);
  Graph g = deps.graph();
  for (const auto& [node, c] : s.cuts) {
    if (s.dead.count(node)) continue;
    Node& n = g.mutable_node(node);
    if (n.op == OpKind::kConv2d) {
      auto& a = n.as<Conv2dAttrs>();
      if (is_depthwise(a)) {
        a.out_channels -= static_cast<int64_t>(c.out.size());
        a.in_channels = a.groups = a.out_channels;
      } else {
        a.out_channels -= static_cast<int64_t>(c.out.size());
        a.in_channels -= static_cast<int64_t>(c.in.size());
      }
    } else if (n.op == OpKind::kLinear) {
      auto& a = n.as<LinearAttrs>();
      a.out_features -= static_cast<int64_t>(c.out.size());
      a.in_features -= static_cast<int64_t>(c.in.size());
    } else {
      n.as<BatchNormAttrs>().num_features -= static_cast<int64_t>(c.bn.size());
    }
  }
  if (s.dead.empty()) {
    g.infer_shapes();
    return g;
  }
  // Emptied branches: drop their nodes; each add they joined passes its other
  // operand on under its own name, so consumers and the output stay wired.
  Graph out;
  for (const auto& n : g.nodes()) {
    if (s.dead.count(n.name)) continue;
    auto j = s.joins.find(n.name);
    if (j == s.joins.end()) {
      out.add(n.name, n.op, n.attrs, n.inputs);
    } else {
      out.add(n.name, OpKind::kIdentity, NoAttrs{}, {j->second});
    }
  }
  out.set_output(g.output());
  return out;
}

GraphModule prune_channels(GraphModule& model, const DependencyGraph& deps, const ChannelPlan& plan) {
  NNOPT_CHECK(model->graph() == deps.graph(), ValueError,
              "prune_channels: the model's graph is not the one the dependency groups were built from");
  for (const auto& n : model->graph().nodes()) {
    auto& m = model->node_module(n.name);
    NNOPT_CHECK(!m.weight_transform && !m.act_transform, ValueError, "prune_channels: node '",
                n.name, "' carries a ", m.weight_transform ? "weight" : "activation",
                " transform; remove quantizers and masks before channel surgery");
  }
  Surgery s = collect_cuts(deps, plan);
  Graph g = prune_graph(deps, plan);
  TensorMap state = model->state();
  for (const auto& node : s.dead)
    for (auto it = state.begin(); it != state.end();)
      it = it->first.rfind(node + ".", 0) == 0 ? state.erase(it) : std::next(it);
  torch::NoGradGuard ng;
  for (const auto& [node, c] : s.cuts) {
    if (s.dead.count(node)) continue;
    const Node& n = deps.graph().node(node);
    auto& m = model->node_module(node);
    auto sel = [&](const char* what, const torch::Tensor& t, int64_t dim, const std::set<int64_t>& drop) {
      if (!t.defined() || drop.empty()) return;
      state[node + "." + what] = t.index_select(dim, keep_index(t.size(dim), drop)).clone();
    };
    if (n.op == OpKind::kBatchNorm) {
      sel("weight", m.weight, 0, c.bn);
      sel("bias", m.bias, 0, c.bn);
      sel("running_mean", m.running_mean, 0, c.bn);
      sel("running_var", m.running_var, 0, c.bn);
      continue;
    }
    torch::Tensor w = m.weight;
    if (!c.out.empty()) w = w.index_select(0, keep_index(w.size(0), c.out));
    bool dw = n.op == OpKind::kConv2d && is_depthwise(n.as<Conv2dAttrs>());
    if (!dw && !c.in.empty()) w = w.index_select(1, keep_index(w.size(1), c.in));
    state[node + ".weight"] = w.clone();
    sel("bias", m.bias, 0, c.out);
  }
  GraphModule out(g);
  out->load_state(state, true);
  out->train(model->is_training());
  return out;
}

void zero_channels(GraphModule& model, const DependencyGraph& deps, const ChannelPlan& plan) {
  NNOPT_CHECK(model->graph() == deps.graph(), ValueError,
              "zero_channels: the model's graph is not the one the dependency groups were built from");
  Surgery s = collect_cuts(deps, plan);
  torch::NoGradGuard ng;
  for (const auto& [node, c] : s.cuts) {
    auto& m = model->node_module(node);
    const auto& drop = deps.graph().node(node).op == OpKind::kBatchNorm ? c.bn : c.out;
    if (drop.empty()) continue;
    auto idx = torch::tensor(std::vector<int64_t>(drop.begin(), drop.end()), torch::kLong);
    for (auto* t : {&m.weight, &m.bias, &m.running_mean})
      if (t->defined()) t->index_fill_(0, idx, 0.0);
  }
  // An emptied branch adds exactly 0: its last conv and batch norms output 0
  // on every channel (their shifts too, which surgery drops with the branch).
  for (const auto& node : s.dead) {
    auto& m = model->node_module(node);
    for (auto* t : {&m.weight, &m.bias, &m.running_mean})
      if (t->defined()) t->zero_();
  }
}

}  // namespace nnopt
