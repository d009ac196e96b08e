#pragma once
// FitNets hints (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets",
// ICLR, arXiv:1412.6550): the student's "guided" layer is regressed onto the
// teacher's "hint" layer through a learned regressor.
//
//   hint = weight * sum over pairs of mean((adapter(pool(s)) - pool(t))^2)
//
// * adapter: a 1x1 convolution with bias, C_s -> C_t, created when the channel
//   counts differ (or always with always_adapt). FitNets used a convolutional
//   regressor; a 1x1 conv is the common, cheaper variant. For taps of rank 1
//   ([B, F], linear outputs) the adapter acts as a linear layer F_s -> F_t.
//   Init: PyTorch's Conv2d default (kaiming-uniform, a = sqrt(5)), global RNG.
// * spatial sizes: each of H and W is reduced to the smaller of the two maps
//   by adaptive average pooling (the adapter is per-position linear, so pooling
//   before it is the same as after it, and cheaper).
// * reduction: mean squared error over all elements (F.mse_loss); the paper's
//   0.5 * sum is a rescaling absorbed by `weight`.
//
// Adapters are registered on the holder module that DistillCallback attaches
// to the student, so Trainer's optimizer trains them (see distill_callback.h).
#include <torch/arg.h>
#include <torch/torch.h>

#include <vector>

#include "nnopt/distill/distill_loss.h"

namespace nnopt {

struct HintOptions {
  HintOptions() = default;
  explicit HintOptions(double weight) : weight_(weight) {}
  /// Weight of the summed MSE (>= 0); default 1. Spec key "weight".
  TORCH_ARG(double, weight) = 1.0;
  /// Create an adapter even when the channel counts agree; default false.
  TORCH_ARG(bool, always_adapt) = false;

 public:
  void validate() const;
};

/// MSE between a student and a teacher feature after pooling both to the
/// smaller H and W. [B, C, Hs, Ws], [B, C, Ht, Wt] (or [B, F] each) -> scalar.
/// Throws ValueError if batch, rank or channels differ.
torch::Tensor hint_mse(const torch::Tensor& student, const torch::Tensor& teacher);

/// Registry name "hint"; spec key weight; needs at least one tap pair.
class HintLoss : public DistillLoss {
 public:
  HintLoss(std::vector<TapPair> taps, HintOptions opt = {});
  std::string name() const override { return "hint"; }
  std::vector<TapPair> tap_pairs() const override { return taps_; }
  /// Taps must have rank 1 or 3 per sample (same rank in both models).
  void bind(const Graph& student, const Graph& teacher, torch::nn::Module& holder) override;
  torch::Tensor forward(const DistillContext& ctx) override;
  /// The adapter of pair i (registered as "hint_<i>"), or an empty holder if the pair has none.
  torch::nn::Conv2d adapter(size_t i) const { return adapters_.at(i); }
  const HintOptions& options() const { return opt_; }

 private:
  std::vector<TapPair> taps_;
  HintOptions opt_;
  std::vector<torch::nn::Conv2d> adapters_;  // one per pair; empty holder = identity
};

}  // namespace nnopt
