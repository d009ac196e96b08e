#pragma once
// Unstructured and N:M pruning: masks on conv2d / linear weights.
//
//   magnitude  zero the smallest |w| (Han et al. 2015): one threshold over all
//              layers (global) or the same sparsity in every layer (per layer)
//   N:M        in every block of M consecutive weights along the input
//              channels keep the N largest |w| (2:4 = NVIDIA's sparse tensor
//              cores); layers whose input channels are not a multiple of M
//              (the first conv on 1-channel images, depthwise convs) are skipped
//
// Masks are applied as a weight transform (MaskTransform: w * mask) so that
// pruned weights stay zero while the rest fine-tunes; they share the slot with
// quantizers through TransformChain (nn/transform_chain.h). Magnitudes are
// taken of the masked weights, so a weight once pruned stays pruned.
//
// Example:
//   auto masks = nnopt::magnitude_masks(model, 0.9, /*global=*/true);
//   nnopt::apply_masks(model, masks);       // fine-tune with zeros kept
//   nnopt::bake_masks(model);               // weights *= mask, transforms gone
#include <torch/torch.h>

#include <map>
#include <string>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

/// node -> bool mask of the weight's shape (true = keep).
using MaskMap = std::map<std::string, torch::Tensor>;

/// w * mask; the mask is a buffer ("<node>.weight_transform.mask"), saved with the model.
class MaskTransformImpl : public TransformImpl {
 public:
  explicit MaskTransformImpl(const torch::Tensor& mask);
  /// [weight shape] -> [weight shape]
  torch::Tensor forward(const torch::Tensor& w) override;
  /// "mask(90.0 %)": the fraction of zeros.
  std::string describe() const override;
  /// Replaces the mask (same shape; ValueError otherwise).
  void set_mask(const torch::Tensor& mask);
  const torch::Tensor& mask() const { return mask_; }

 private:
  torch::Tensor mask_;  // float32, 0 or 1
};

/// The conv2d / linear nodes whose weights unstructured pruning touches (graph order).
std::vector<std::string> prunable_weights(const Graph& g);

/// Magnitude masks at `sparsity` in [0, 1): global (one threshold over all
/// prunable weights) or per layer. Ties at the threshold are broken by
/// position so that exactly round(sparsity * n) weights go.
MaskMap magnitude_masks(GraphModule& model, double sparsity, bool global);

/// N:M masks (keep n of every m along the input channels); ValueError unless 0 < n < m.
MaskMap nm_masks(GraphModule& model, int64_t n, int64_t m);

/// Attaches (or updates) a MaskTransform on each node of `masks`, after any
/// transform already in the slot (TransformChain).
void apply_masks(GraphModule& model, const MaskMap& masks);

/// The masks currently attached (node -> bool mask).
MaskMap current_masks(GraphModule& model);

/// Multiplies each masked weight by its mask and removes the MaskTransforms
/// (other transforms stay).
void bake_masks(GraphModule& model);

/// Fraction of zeros over the prunable weights as used in forward (after transforms).
double weight_sparsity(GraphModule& model);

}  // namespace nnopt
