#include "nnopt/nn/fold_bn.h"

#include <map>

#include "nnopt/core/error.h"

namespace nnopt {

BnFoldPlan plan_bn_folding(const Graph& g) {
  BnFoldPlan plan;
  for (const auto& n : g.nodes()) {
    if (n.op != OpKind::kBatchNorm) continue;
    const Node& src = g.node(n.inputs[0]);
    if (src.op != OpKind::kConv2d && src.op != OpKind::kLinear) continue;
    if (g.consumers(src.name).size() != 1 || g.output() == src.name) continue;
    plan.emplace_back(src.name, n.name);
  }
  return plan;
}

GraphModule apply_bn_folding(GraphModule& model, const BnFoldPlan& plan) {
  const Graph& g = model->graph();
  std::map<std::string, std::string> bn_to_src, src_to_bn;
  for (const auto& [src, bn] : plan) {
    NNOPT_CHECK(g.contains(src) && g.contains(bn) && g.node(bn).op == OpKind::kBatchNorm &&
                    g.node(bn).inputs[0] == src && g.consumers(src).size() == 1,
                ValueError, "batch-norm folding: '", bn, "' cannot fold into '", src, "'");
    const bool sim = model->bn_fold_simulation();
    for (const auto* name : {&src, &bn}) {
      auto& m = model->node_module(*name);
      NNOPT_CHECK(sim || (!m.weight_transform && !m.act_transform), ValueError, "batch-norm folding: node '",
                  *name, "' carries a transform; fold before attaching quantizers or masks");
    }
    NNOPT_CHECK(!sim || !model->node_module(src).act_transform || !model->node_module(bn).act_transform,
                ValueError, "batch-norm folding: '", src, "' and '", bn,
                "' both carry an activation transform; the folded node can keep only one");
    bn_to_src[bn] = src;
    src_to_bn[src] = bn;
  }
  Graph out;
  for (const auto& n : g.nodes()) {
    if (bn_to_src.count(n.name)) continue;
    Node c = n;
    for (auto& in : c.inputs)
      if (bn_to_src.count(in)) in = bn_to_src[in];
    if (src_to_bn.count(n.name)) {
      if (n.op == OpKind::kConv2d) c.as<Conv2dAttrs>().bias = true;
      else c.as<LinearAttrs>().bias = true;
    }
    out.add(c.name, c.op, c.attrs, c.inputs);
  }
  std::string o = g.output();
  out.set_output(bn_to_src.count(o) ? bn_to_src[o] : o);

  GraphModule folded(out);
  TensorMap st = model->state();
  TensorMap next;
  for (const auto& [name, t] : folded->state()) next[name] = st.count(name) ? st[name] : t;
  torch::NoGradGuard ng;
  for (const auto& [src, bn] : plan) {
    auto& b = model->node_module(bn);
    const auto& a = g.node(bn).as<BatchNormAttrs>();
    auto inv = torch::rsqrt(b.running_var + a.eps);               // [C]
    auto gamma = b.weight.defined() ? b.weight : torch::ones_like(inv);
    auto beta = b.bias.defined() ? b.bias : torch::zeros_like(inv);
    auto scale = gamma * inv;                                      // [C]
    auto w = st.at(src + ".weight");
    std::vector<int64_t> shape(w.dim(), 1);
    shape[0] = -1;
    next[src + ".weight"] = w * scale.reshape(shape);
    auto bias = st.count(src + ".bias") ? st.at(src + ".bias") : torch::zeros_like(inv);
    next[src + ".bias"] = (bias - b.running_mean) * scale + beta;
  }
  folded->load_state(next, true);
  // Under fold simulation the transforms already see the folded weights and
  // outputs: they move over (a folded batch norm's activation transform to
  // its producer, which now outputs what the batch norm did).
  if (model->bn_fold_simulation())
    for (const auto& n : g.nodes()) {
      auto& m = model->node_module(n.name);
      const std::string to = bn_to_src.count(n.name) ? bn_to_src[n.name] : n.name;
      if (m.weight_transform) folded->set_weight_transform(to, m.weight_transform);
      if (m.act_transform) folded->set_activation_transform(to, m.act_transform);
    }
  folded->train(model->is_training());
  return folded;
}

GraphModule fold_batch_norm(GraphModule& model) {
  return apply_bn_folding(model, plan_bn_folding(model->graph()));
}

}  // namespace nnopt
