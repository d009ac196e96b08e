// fpgm: Filter Pruning via Geometric Median (He et al. 2019). The geometric
// median of a layer's filters is the point minimizing the sum of Euclidean
// distances to them; filters near it are replaceable by the others. As in the
// paper's implementation, filter i scores sum_j ||F_i - F_j||_2 over the
// layer's filters: the smallest sums lie nearest the median and go first.
#include "nnopt/prune/criterion.h"

namespace nnopt {

std::vector<torch::Tensor> FpgmImportance::score(GraphModule& model, const DependencyGraph& deps,
                                                 const ImportanceData&) {
  torch::NoGradGuard ng;
  auto layer = [&](const std::string& node) {
    auto w = model->node_module(node).weight.detach().to(torch::kDouble).flatten(1);  // [out, k]
    return torch::cdist(w, w).sum(1);                                                 // [out]
  };
  std::vector<torch::Tensor> out;
  for (const auto& g : deps.groups()) out.push_back(mean_over_slices(g, SliceRole::kOut, layer));
  return out;
}

}  // namespace nnopt
