// l2: L2 norm of each output filter.
#include "nnopt/prune/criterion.h"

namespace nnopt {

std::vector<torch::Tensor> L2Importance::score(GraphModule& model, const DependencyGraph& deps,
                                               const ImportanceData&) {
  torch::NoGradGuard ng;
  auto layer = [&](const std::string& node) {
    // [out, ...] -> [out]
    return model->node_module(node).weight.detach().flatten(1).pow(2).sum(1).sqrt();
  };
  std::vector<torch::Tensor> out;
  for (const auto& g : deps.groups()) out.push_back(mean_over_slices(g, SliceRole::kOut, layer));
  return out;
}

}  // namespace nnopt
