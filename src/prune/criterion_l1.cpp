// l1: L1 norm of each output filter (Li et al. 2017, "Pruning Filters for Efficient ConvNets").
#include "nnopt/prune/criterion.h"

namespace nnopt {

std::vector<torch::Tensor> L1Importance::score(GraphModule& model, const DependencyGraph& deps,
                                               const ImportanceData&) {
  torch::NoGradGuard ng;
  auto layer = [&](const std::string& node) {
    // [out, in/groups, kh, kw] or [out, in] -> [out]
    return model->node_module(node).weight.detach().abs().flatten(1).sum(1);
  };
  std::vector<torch::Tensor> out;
  for (const auto& g : deps.groups()) out.push_back(mean_over_slices(g, SliceRole::kOut, layer));
  return out;
}

}  // namespace nnopt
