// hrank: average rank of feature maps (Lin et al. 2020, "HRank: Filter Pruning
// using High-Rank Feature Map"). The rank of a channel's [H, W] output map
// varies little between images; low-rank maps carry less information. Each
// channel scores the mean matrix rank of its maps over the images of a few
// batches (eval mode, no gradients), taken at the activation outputs (relu,
// relu6, hardswish) that carry it, else at its conv outputs. Vector features
// ([F], linear layers) have no map to rank; they score the mean |activation|.
#include <algorithm>
#include <limits>
#include <map>
#include <set>

#include "nnopt/prune/criterion.h"

namespace nnopt {

namespace {
bool is_activation(OpKind op) {
  return op == OpKind::kReLU || op == OpKind::kReLU6 || op == OpKind::kHardswish;
}
}  // namespace

std::vector<torch::Tensor> HRankImportance::score(GraphModule& model, const DependencyGraph& deps,
                                                  const ImportanceData& data) {
  require_data(data);
  const Graph& graph = model->graph();
  // Per group: the tensors (with channel -> unit maps) to rank.
  std::vector<std::vector<const std::pair<std::string, std::vector<int64_t>>*>> chosen(deps.groups().size());
  std::set<std::string> taps;
  for (size_t gi = 0; gi < deps.groups().size(); ++gi) {
    const auto& g = deps.groups()[gi];
    for (const auto& t : g.tensors)
      if (is_activation(graph.node(t.first).op)) chosen[gi].push_back(&t);
    if (chosen[gi].empty())
      for (const auto& t : g.tensors)
        if (std::find(g.producers.begin(), g.producers.end(), t.first) != g.producers.end())
          chosen[gi].push_back(&t);
    for (auto* t : chosen[gi]) taps.insert(t->first);
  }
  const bool was_training = model->is_training();
  model->eval();
  std::map<std::string, torch::Tensor> sums;  // tap -> float64 [C]
  {
    torch::NoGradGuard ng;
    std::vector<std::string> tap_list(taps.begin(), taps.end());
    int64_t images = 0;
    for (const auto& x : data.inputs) {
      TensorMap out;
      model->forward(x, tap_list, out);
      for (const auto& name : tap_list) {
        const auto& t = out.at(name);
        torch::Tensor per;  // [C]: summed over the batch
        if (t.dim() == 4) {
          auto r = at::linalg_matrix_rank(t.reshape({-1, t.size(2), t.size(3)}));  // [B*C]
          per = r.reshape({t.size(0), t.size(1)}).to(torch::kDouble).sum(0);
        } else {
          per = t.abs().flatten(1).to(torch::kDouble).sum(0);
        }
        auto& s = sums[name];
        s = s.defined() ? s + per : per;
      }
      images += x.size(0);
    }
    for (auto& [n, s] : sums) s /= static_cast<double>(images);
  }
  model->train(was_training);
  std::vector<torch::Tensor> out;
  for (size_t gi = 0; gi < deps.groups().size(); ++gi) {
    const auto& g = deps.groups()[gi];
    auto sum = torch::zeros({g.size()}, torch::kDouble);
    auto cnt = torch::zeros({g.size()}, torch::kDouble);
    auto sa = sum.accessor<double, 1>();
    auto ca = cnt.accessor<double, 1>();
    for (auto* t : chosen[gi]) {
      auto v = sums.at(t->first).contiguous();
      const double* vp = v.data_ptr<double>();
      for (size_t c = 0; c < t->second.size(); ++c) {
        int64_t u = t->second[c];
        if (u < 0) continue;
        sa[u] += vp[c];
        ca[u] += 1;
      }
    }
    out.push_back(torch::where(cnt > 0, sum / cnt.clamp_min(1),
                               torch::full_like(sum, std::numeric_limits<double>::infinity())));
  }
  return out;
}

}  // namespace nnopt
