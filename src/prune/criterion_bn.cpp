// bn: batch-norm scale |gamma| (Liu et al. 2017, "Learning Efficient
// Convolutional Networks through Network Slimming"). Train with BnL1Callback
// (prune/callbacks.h) to push unimportant scales towards zero first.
#include "nnopt/core/error.h"
#include "nnopt/prune/criterion.h"

namespace nnopt {

std::vector<torch::Tensor> BnScaleImportance::score(GraphModule& model, const DependencyGraph& deps,
                                                    const ImportanceData&) {
  torch::NoGradGuard ng;
  auto layer = [&](const std::string& node) {
    auto& m = model->node_module(node);
    NNOPT_CHECK(m.weight.defined(), ValueError, "criterion 'bn': batch norm '", node,
                "' has no scale (affine=false)");
    return m.weight.detach().abs();
  };
  std::vector<torch::Tensor> out;
  bool any = false;
  for (const auto& g : deps.groups()) {
    out.push_back(mean_over_slices(g, SliceRole::kBn, layer));
    any = any || torch::isfinite(out.back()).any().item<bool>();
  }
  NNOPT_CHECK(any || deps.groups().empty(), ValueError,
              "criterion 'bn' needs batch_norm layers after the pruned convs; the model has none");
  return out;
}

}  // namespace nnopt
