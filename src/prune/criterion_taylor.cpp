// taylor: first-order Taylor importance (Molchanov et al. 2019, "Importance
// Estimation for Neural Network Pruning", CVPR). The loss change from removing
// a set S of parameters is approximated by I_S = (sum_{s in S} g_s w_s)^2; S
// is every parameter of the channel: its output filters and biases and its
// batch-norm weights and biases. Averaged over the batches. Gradients come
// from torch::autograd::grad in eval mode (running BN statistics), so the
// model's .grad fields and buffers stay as they were.
#include <map>
#include <set>

#include "nnopt/prune/criterion.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

std::vector<torch::Tensor> TaylorImportance::score(GraphModule& model, const DependencyGraph& deps,
                                                   const ImportanceData& data) {
  require_data(data);
  const bool was_training = model->is_training();
  model->eval();
  // The parameters whose slices carry units.
  std::set<std::string> nodes;
  for (const auto& g : deps.groups())
    for (const auto& u : g.units)
      for (const auto& s : u.slices)
        if (s.role != SliceRole::kIn) nodes.insert(s.node);
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
  for (const auto& n : nodes) {
    auto& m = model->node_module(n);
    for (auto* t : {&m.weight, &m.bias})
      if (t->defined() && t->requires_grad()) {
        names.push_back(n);
        params.push_back(*t);
      }
  }
  std::vector<torch::Tensor> acc;
  for (const auto& g : deps.groups()) acc.push_back(torch::zeros({g.size()}, torch::kDouble));
  for (size_t b = 0; b < data.inputs.size(); ++b) {
    auto loss = task_loss(model->forward(data.inputs[b]), data.labels[b]);
    auto grads = torch::autograd::grad({loss}, params, {}, false, false, true);
    // node -> [channels]: sum over each output row of grad * weight (+ bias term)
    std::map<std::string, torch::Tensor> contrib;
    for (size_t k = 0; k < params.size(); ++k) {
      if (!grads[k].defined()) continue;
      auto gw = (grads[k].detach() * params[k].detach()).to(torch::kDouble);
      auto c = gw.dim() > 1 ? gw.flatten(1).sum(1) : gw;
      auto& slot = contrib[names[k]];
      slot = slot.defined() ? slot + c : c;
    }
    for (size_t gi = 0; gi < deps.groups().size(); ++gi) {
      const auto& g = deps.groups()[gi];
      auto a = acc[gi].accessor<double, 1>();
      for (int64_t u = 0; u < g.size(); ++u) {
        double s = 0;
        for (const auto& sl : g.units[u].slices) {
          if (sl.role == SliceRole::kIn) continue;
          auto it = contrib.find(sl.node);
          if (it != contrib.end()) s += it->second[sl.index].item<double>();
        }
        a[u] += s * s;
      }
    }
  }
  for (auto& t : acc) t /= static_cast<double>(data.inputs.size());
  model->train(was_training);
  return acc;
}

}  // namespace nnopt
