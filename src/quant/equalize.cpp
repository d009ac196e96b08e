// Cross-layer equalization (Nagel et al. 2019, sec. 4.1): see quant/equalize.h.
#include "nnopt/quant/equalize.h"

#include <cmath>

#include "nnopt/core/error.h"

namespace nnopt {

namespace {

bool is_layer(OpKind op) { return op == OpKind::kConv2d || op == OpKind::kLinear; }

// Plain (groups 1) or depthwise; other grouped convolutions are not handled.
bool supported_layer(const Node& n) {
  if (n.op == OpKind::kLinear) return true;
  const auto& a = n.as<Conv2dAttrs>();
  return a.groups == 1 || (a.groups == a.in_channels && a.groups == a.out_channels);
}
bool depthwise(const Node& n) {
  return n.op == OpKind::kConv2d && n.as<Conv2dAttrs>().groups > 1;
}

// [C_out, ...] -> max |.| per output channel, [C_out]
torch::Tensor out_ranges(const torch::Tensor& w) { return w.abs().reshape({w.size(0), -1}).amax(1); }

// max |.| per input channel of `second`, [C_in]
torch::Tensor in_ranges(const Node& second, const torch::Tensor& w) {
  if (depthwise(second)) return out_ranges(w);  // filter i reads channel i
  return w.abs().transpose(0, 1).reshape({w.size(1), -1}).amax(1);
}

std::vector<int64_t> channel_shape(int64_t dim, int64_t axis) {
  std::vector<int64_t> s(dim, 1);
  s[axis] = -1;
  return s;
}

}  // namespace

std::string EqualizationPlan::to_string() const {
  std::string s;
  for (const auto& p : pairs)
    s += str_cat("equalize ", p.first, " -> ", p.act.empty() ? std::string() : p.act + " -> ",
                 p.second, "\n");
  for (const auto& k : skipped) s += "skip " + k + "\n";
  return s;
}

void EqualizeOptions::validate() const {
  NNOPT_CHECK(max_iterations_ >= 1, ValueError, "equalize: max_iterations must be >= 1, got ",
              max_iterations_);
  NNOPT_CHECK(tolerance_ > 0, ValueError, "equalize: tolerance must be > 0, got ", tolerance_);
}

EqualizationPlan plan_equalization(const Graph& g) {
  EqualizationPlan plan;
  for (const Node& n : g.nodes()) {
    if (!is_layer(n.op) || n.name == g.output()) continue;
    auto c = g.consumers(n.name);
    if (c.size() != 1) continue;  // the output channels feed several readers
    const Node* next = &g.node(c[0]);
    std::string act;
    if (next->op == OpKind::kBatchNorm) {
      plan.skipped.push_back(str_cat(n.name, " -> ", next->name,
                                     ": batch norm not folded (fold_batch_norm first)"));
      continue;
    }
    if (next->op == OpKind::kReLU6) {
      auto c6 = g.consumers(next->name);
      if (c6.size() == 1 && is_layer(g.node(c6[0]).op))
        plan.skipped.push_back(str_cat(n.name, " -> ", next->name, " -> ", c6[0],
                                       ": relu6 is not positively homogeneous (the clip at 6 "
                                       "would need a per-channel clip 6/s)"));
      continue;
    }
    if (next->op == OpKind::kReLU) {
      if (next->name == g.output()) continue;
      act = next->name;
      auto c2 = g.consumers(act);
      if (c2.size() != 1) continue;
      next = &g.node(c2[0]);
    }
    if (!is_layer(next->op)) continue;
    if (!supported_layer(n) || !supported_layer(*next)) {
      plan.skipped.push_back(str_cat(n.name, " -> ", next->name,
                                     ": grouped convolution (only plain and depthwise)"));
      continue;
    }
    plan.pairs.push_back({n.name, act, next->name});
  }
  return plan;
}

std::pair<torch::Tensor, torch::Tensor> pair_ranges(GraphModule& model, const EqualizePair& p) {
  const Graph& g = model->graph();
  return {out_ranges(model->node_module(p.first).weight.detach()),
          in_ranges(g.node(p.second), model->node_module(p.second).weight.detach())};
}

EqualizeResult equalize_cross_layer(GraphModule& model, const EqualizeOptions& opt) {
  opt.validate();
  const Graph& g = model->graph();
  EqualizeResult r;
  r.plan = plan_equalization(g);
  for (const auto& p : r.plan.pairs)
    for (const auto* name : {&p.first, &p.second})
      NNOPT_CHECK(!model->node_module(*name).weight_transform, ValueError, "equalize: node '",
                  *name, "' carries a weight transform; equalize before attaching quantizers");
  torch::NoGradGuard ng;
  for (const auto& p : r.plan.pairs)
    r.scales[p.first] = torch::ones({model->node_module(p.first).weight.size(0)});
  for (r.iterations = 0; r.iterations < opt.max_iterations();) {
    ++r.iterations;
    double worst = 0;
    for (const auto& p : r.plan.pairs) {
      auto& m1 = model->node_module(p.first);
      auto& m2 = model->node_module(p.second);
      auto [r1, r2] = pair_ranges(model, p);
      NNOPT_CHECK(r1.size(0) == r2.size(0), ValueError, "equalize: ", p.first, " has ", r1.size(0),
                  " output channels but ", p.second, " reads ", r2.size(0));
      // s_i = sqrt(r1_i r2_i) / r2_i; channels with a zero range keep s_i = 1.
      auto ok = (r1 > 0) & (r2 > 0);
      auto s = torch::where(ok, torch::sqrt(r1 * r2) / r2, torch::ones_like(r1));
      m1.weight.div_(s.reshape(channel_shape(m1.weight.dim(), 0)));
      if (m1.bias.defined()) m1.bias.div_(s);
      const int64_t axis = depthwise(g.node(p.second)) ? 0 : 1;
      m2.weight.mul_(s.reshape(channel_shape(m2.weight.dim(), axis)));
      r.scales[p.first].mul_(s);
      worst = std::max(worst, (s - 1).abs().max().item<double>());
    }
    if (worst <= opt.tolerance()) break;
  }
  return r;
}

}  // namespace nnopt
