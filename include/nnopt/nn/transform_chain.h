#pragma once
// TransformChain: several weight (or activation) transforms in one slot.
// GraphModule has one weight_transform slot per node; a pruning mask and a
// fake-quantizer on the same weight share it through a chain, applied in
// order (mask first, then quantize: the quantizer sees the pruned weight).
//
// Example:
//   nnopt::add_weight_transform(model, "conv1", mask);  // alone: set directly
//   nnopt::add_weight_transform(model, "conv1", fq);    // now chain(mask -> fq)
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

class TransformChainImpl : public TransformImpl {
 public:
  /// Parts are registered as submodules "0", "1", ... (their tensors save with the model).
  explicit TransformChainImpl(std::vector<TransformPtr> parts);
  /// [any] -> [same]: parts applied in order.
  torch::Tensor forward(const torch::Tensor& x) override;
  /// "chain(mask(90.0 %) -> lsq(4))".
  std::string describe() const override;
  const std::vector<TransformPtr>& parts() const { return parts_; }

 private:
  std::vector<TransformPtr> parts_;
};

/// Adds `t` after the node's current weight transform: sets it if the slot is
/// empty, appends to an existing chain, or makes chain(existing -> t).
void add_weight_transform(GraphModule& model, const std::string& node, TransformPtr t);

/// All transforms in the node's weight slot, chains flattened, in order.
std::vector<TransformPtr> weight_transforms(GraphModule& model, const std::string& node);

/// Removes the transforms for which `drop` is true from the node's weight slot
/// (a chain left with one part becomes that part; with none, the slot empties).
void remove_weight_transforms(GraphModule& model, const std::string& node,
                              const std::function<bool(const TransformPtr&)>& drop);

}  // namespace nnopt
