// random: uniform scores from the seed; the baseline every criterion must beat.
#include <ATen/CPUGeneratorImpl.h>

#include "nnopt/prune/criterion.h"

namespace nnopt {

std::vector<torch::Tensor> RandomImportance::score(GraphModule&, const DependencyGraph& deps,
                                                   const ImportanceData&) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(options_.seed());
  std::vector<torch::Tensor> out;
  for (const auto& g : deps.groups())
    out.push_back(at::rand({g.size()}, gen, torch::TensorOptions().dtype(torch::kDouble)));
  return out;
}

}  // namespace nnopt
