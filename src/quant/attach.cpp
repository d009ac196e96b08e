// Placing FakeQuant transforms on a GraphModule: the plan, attaching,
// finding/removing them, and moving them to/from a scale table.
#include "nnopt/quant/attach.h"

#include <algorithm>
#include <map>
#include <set>

#include "nnopt/core/error.h"

namespace nnopt {

namespace {
bool is_layer(OpKind op) { return op == OpKind::kConv2d || op == OpKind::kLinear; }
bool is_relu(OpKind op) { return op == OpKind::kReLU || op == OpKind::kReLU6; }
// Ops whose output stays on the input's quantization grid (or is a pooled
// average re-quantized with the input's qparams).
bool passes_through(OpKind op) {
  switch (op) {
    case OpKind::kMaxPool:
    case OpKind::kFlatten:
    case OpKind::kDropout:
    case OpKind::kIdentity:
    case OpKind::kReLU:
    case OpKind::kReLU6:
    case OpKind::kAvgPool:
    case OpKind::kGlobalAvgPool:
      return true;
    default:
      return false;
  }
}
void check_bits(int64_t b, const std::string& what) {
  NNOPT_CHECK(b >= 2 && b <= 8, ValueError, what, ": bits must be in [2, 8], got ", b);
}
int64_t weight_rank(OpKind op) { return op == OpKind::kConv2d ? 4 : 2; }
}  // namespace

void QuantConfig::validate() const {
  weight_.validate();
  activation_.validate();
  NNOPT_CHECK(!activation_.per_channel(), ValueError,
              "per-channel activation quantization is not supported (activation.per_channel)");
  NNOPT_CHECK(first_last_bits_ == 0 || (first_last_bits_ >= 2 && first_last_bits_ <= 8),
              ValueError, "first_last_bits must be 0 (off) or in [2, 8], got ", first_last_bits_);
  for (const auto& [n, b] : weight_bits_) check_bits(b, str_cat("weight_bits['", n, "']"));
  for (const auto& [n, b] : activation_bits_) check_bits(b, str_cat("activation_bits['", n, "']"));
  observer_options_.validate();
  // Unknown names and per-tensor-only observers on per-channel schemes throw here.
  make_observer(weight_observer_, weight_, observer_options_);
  make_observer(activation_observer_, activation_, observer_options_);
}

std::string QuantizerSite::to_string() const {
  std::string s = str_cat(node, weight ? " weight " : " activation ", scheme.describe());
  if (!follows.empty()) s += " follows " + follows;
  else s += " observer " + observer;
  return s;
}

std::vector<QuantizerSite> plan_quantizers(const Graph& g, const QuantConfig& cfg) {
  cfg.validate();
  const auto& nodes = g.nodes();
  std::map<std::string, QuantizerSite> act;      // site node -> activation quantizer
  std::map<std::string, std::string> group_of;   // any grouped node -> its site node
  std::map<std::string, QuantizerSite> wts;      // conv/linear node -> weight quantizer
  std::vector<std::string> layers;               // conv/linear nodes in order
  std::set<std::string> absorbed;

  auto single_consumer = [&](const std::string& n) -> const Node* {
    auto c = g.consumers(n);
    return c.size() == 1 ? &g.node(c[0]) : nullptr;
  };
  auto own_site = [&](const std::string& node, const std::vector<std::string>& members) {
    QuantizerSite s;
    s.node = node;
    s.scheme = cfg.activation();
    s.observer = cfg.activation_observer();
    act[node] = s;
    for (const auto& m : members) {
      group_of[m] = node;
      absorbed.insert(m);
    }
  };
  // The activation quantizer whose values reach `start` through pass-through
  // ops; "" if none. Followers resolve to their leader.
  auto upstream_site = [&](std::string cur) -> std::string {
    while (true) {
      auto it = act.find(cur);
      if (it != act.end()) return it->second.follows.empty() ? cur : it->second.follows;
      const Node& n = g.node(cur);
      if (!passes_through(n.op) || n.inputs.size() != 1) return "";
      cur = n.inputs[0];
    }
  };

  for (const Node& n : nodes) {
    if (is_layer(n.op)) {
      NNOPT_CHECK(!cfg.weight().per_channel() || cfg.weight().ch_axis() < weight_rank(n.op),
                  ValueError, "node '", n.name, "' weight: ch_axis ", cfg.weight().ch_axis(),
                  " is out of range for a tensor of rank ", weight_rank(n.op));
      QuantizerSite s;
      s.node = n.name;
      s.weight = true;
      s.scheme = cfg.weight();
      s.observer = cfg.weight_observer();
      wts[n.name] = s;
      layers.push_back(n.name);
    }
    if (absorbed.count(n.name)) continue;
    switch (n.op) {
      case OpKind::kInput:
        if (cfg.quantize_input()) own_site(n.name, {n.name});
        break;
      case OpKind::kConv2d:
      case OpKind::kLinear:
      case OpKind::kBatchNorm:
      case OpKind::kAdd: {
        std::vector<std::string> members{n.name};
        std::string end = n.name;
        if (is_layer(n.op)) {
          const Node* c = single_consumer(end);
          if (c && c->op == OpKind::kBatchNorm) members.push_back(end = c->name);
        }
        const Node* c = single_consumer(end);
        if (c && is_relu(c->op)) members.push_back(end = c->name);
        own_site(end, members);
        break;
      }
      case OpKind::kConcat:
      case OpKind::kHardswish:
        own_site(n.name, {n.name});
        break;
      case OpKind::kAvgPool:
      case OpKind::kGlobalAvgPool: {
        std::string leader = upstream_site(n.inputs[0]);
        if (leader.empty()) {
          own_site(n.name, {n.name});
        } else {
          QuantizerSite s;
          s.node = n.name;
          s.follows = leader;
          act[n.name] = s;
          group_of[n.name] = n.name;
        }
        break;
      }
      default:
        break;
    }
  }

  auto leader_of = [&](const std::string& site) {
    const auto& s = act.at(site);
    return s.follows.empty() ? site : s.follows;
  };
  // First / last layer precision.
  if (cfg.first_last_bits() != 0 && !layers.empty()) {
    const int64_t b = cfg.first_last_bits();
    wts[layers.front()].scheme.bits(b);
    wts[layers.back()].scheme.bits(b);
    const std::string& in = g.input_name();
    if (act.count(in)) act[in].scheme.bits(b);
    for (const auto& i : g.node(layers.back()).inputs) {
      std::string site = upstream_site(i);
      if (!site.empty()) act[leader_of(site)].scheme.bits(b);
    }
  }
  // Per-layer overrides.
  for (const auto& [name, b] : cfg.weight_bits()) {
    auto it = wts.find(name);
    if (it == wts.end()) {
      bool exists = std::any_of(nodes.begin(), nodes.end(),
                                [&](const Node& n) { return n.name == name; });
      throw ValueError(exists ? str_cat("weight_bits: node '", name, "' (",
                                        op_name(g.node(name).op), ") is not a conv2d/linear node")
                              : str_cat("weight_bits: unknown node '", name, "'"));
    }
    it->second.scheme.bits(b);
  }
  for (const auto& [name, b] : cfg.activation_bits()) {
    auto it = group_of.find(name);
    if (it == group_of.end()) {
      bool exists = std::any_of(nodes.begin(), nodes.end(),
                                [&](const Node& n) { return n.name == name; });
      throw ValueError(exists ? str_cat("activation_bits: node '", name,
                                        "' has no activation quantizer")
                              : str_cat("activation_bits: unknown node '", name, "'"));
    }
    act[leader_of(it->second)].scheme.bits(b);
  }
  // Followers take their leader's scheme.
  for (auto& [name, s] : act)
    if (!s.follows.empty()) s.scheme = act.at(s.follows).scheme;

  std::vector<QuantizerSite> out;
  for (const Node& n : nodes) {
    if (wts.count(n.name)) out.push_back(wts[n.name]);
    if (act.count(n.name)) out.push_back(act[n.name]);
  }
  return out;
}

std::vector<AttachedQuantizer> find_quantizers(GraphModule& model) {
  std::vector<AttachedQuantizer> out;
  for (const Node& n : model->graph().nodes()) {
    NodeModuleImpl& m = model->node_module(n.name);
    if (auto fq = std::dynamic_pointer_cast<FakeQuantImpl>(m.weight_transform))
      out.push_back({n.name, true, fq});
    if (auto fq = std::dynamic_pointer_cast<FakeQuantImpl>(m.act_transform))
      out.push_back({n.name, false, fq});
  }
  return out;
}

void remove_quantizers(GraphModule& model) {
  for (const auto& q : find_quantizers(model)) {
    if (q.weight)
      model->set_weight_transform(q.node, nullptr);
    else
      model->set_activation_transform(q.node, nullptr);
  }
}

std::vector<QuantizerSite> attach_quantizers(GraphModule& model, const QuantConfig& config) {
  auto plan = plan_quantizers(model->graph(), config);
  remove_quantizers(model);
  for (const auto& s : plan) {
    int64_t channels = 1;
    if (s.weight && s.scheme.per_channel())
      channels = model->node_module(s.node).weight.size(s.scheme.ch_axis());
    ObserverPtr obs = s.observer.empty()
                          ? nullptr
                          : make_observer(s.observer, s.scheme, config.observer_options());
    auto fq = std::make_shared<FakeQuantImpl>(s.scheme, obs, channels);
    fq->set_follows(s.follows);
    fq->set_quantizing(false);  // observe-only until calibrate()
    if (obs) fq->set_observing(true);
    if (s.weight)
      model->set_weight_transform(s.node, fq);
    else
      model->set_activation_transform(s.node, fq);
  }
  return plan;
}

ScaleTable export_scale_table(GraphModule& model) {
  ScaleTable t;
  for (const auto& q : find_quantizers(model)) {
    QuantizerRecord r;
    r.scheme = q.fq->scheme();
    r.qparams = q.fq->qparams();
    r.observer = q.fq->observer() ? q.fq->observer()->name() : "";
    r.follows = q.fq->follows();
    if (q.weight)
      t.nodes[q.node].weight = r;
    else
      t.nodes[q.node].activation = r;
  }
  return t;
}

void apply_scale_table(GraphModule& model, const ScaleTable& table) {
  const Graph& g = model->graph();
  std::set<std::string> names;
  for (const Node& n : g.nodes()) names.insert(n.name);
  struct Pending {
    std::string node;
    bool weight;
    const QuantizerRecord* rec;
    ObserverPtr obs;
  };
  std::vector<Pending> todo;
  // Check everything first; change the model only when the whole table fits.
  for (const auto& [name, e] : table.nodes) {
    NNOPT_CHECK(names.count(name), ValueError, "scale table: unknown node '", name,
                "' (not in the model's graph)");
    const Node& n = g.node(name);
    if (e.weight) {
      const std::string what = str_cat("scale table: node '", name, "' weight");
      NNOPT_CHECK(is_layer(n.op), ValueError, what, ": node is ", op_name(n.op),
                  ", only conv2d/linear nodes have weight quantizers");
      const auto& w = model->node_module(name).weight;
      const auto& s = e.weight->scheme;
      int64_t channels = 1;
      if (s.per_channel()) {
        NNOPT_CHECK(s.ch_axis() < w.dim(), ValueError, what, ": ch_axis ", s.ch_axis(),
                    " is out of range for a tensor of rank ", w.dim());
        channels = w.size(s.ch_axis());
      }
      check_qparams(s, e.weight->qparams, channels, what);
      ObserverPtr obs = e.weight->observer.empty() ? nullptr : make_observer(e.weight->observer, s);
      todo.push_back({name, true, &*e.weight, obs});
    }
    if (e.activation) {
      const std::string what = str_cat("scale table: node '", name, "' activation");
      const auto& s = e.activation->scheme;
      NNOPT_CHECK(!s.per_channel(), ValueError, what,
                  ": per-channel activation quantization is not supported");
      check_qparams(s, e.activation->qparams, 1, what);
      const std::string& f = e.activation->follows;
      if (!f.empty()) {
        auto it = table.nodes.find(f);
        NNOPT_CHECK(it != table.nodes.end() && it->second.activation, ValueError, what,
                    ": follows '", f, "', which has no activation entry");
      }
      ObserverPtr obs =
          e.activation->observer.empty() ? nullptr : make_observer(e.activation->observer, s);
      todo.push_back({name, false, &*e.activation, obs});
    }
  }
  remove_quantizers(model);
  for (const auto& p : todo) {
    const auto& s = p.rec->scheme;
    auto fq = std::make_shared<FakeQuantImpl>(s, p.obs, p.rec->qparams.scale.numel());
    fq->set_qparams(p.rec->qparams);
    fq->set_follows(p.rec->follows);
    fq->set_quantizing(true);
    if (p.weight)
      model->set_weight_transform(p.node, fq);
    else
      model->set_activation_transform(p.node, fq);
  }
}

}  // namespace nnopt
