#pragma once
// Attention transfer (Zagoruyko & Komodakis 2017, "Paying More Attention to
// Attention", ICLR, arXiv:1612.03928), activation-based, F = mean_c |A_c|^p.
//
// Per tap pair, with Q = vec(F(A)) / ||vec(F(A))||_2 (one row per sample):
//   form "code" (default): mean over batch and positions of (Q_s - Q_t)^2,
//     as at_loss in the authors' code (github.com/szagoruyko/attention-transfer,
//     utils.py: (at(x) - at(y)).pow(2).mean()); beta = 1e3 was tuned for this form.
//   form "paper": eq. (2), the p=2 norm ||Q_s - Q_t||_2 per sample, batch mean.
//   at = beta / 2 * sum over pairs.
// The channel mean instead of the paper's channel sum changes Q by nothing
// (a constant factor removed by the normalization). When the maps differ in
// size, the larger attention map (before normalization) is average-pooled to
// the smaller one; channel counts may differ.
#include <torch/arg.h>
#include <torch/torch.h>

#include <vector>

#include "nnopt/distill/distill_loss.h"

namespace nnopt {

struct AtOptions {
  AtOptions() = default;
  explicit AtOptions(double beta) : beta_(beta) {}
  /// beta (>= 0); the loss is beta/2 * sum over pairs; default 1000 (authors' code).
  TORCH_ARG(double, beta) = 1000.0;
  /// Exponent p of the attention map mean_c |A|^p (> 0); default 2.
  TORCH_ARG(double, p) = 2.0;
  /// "code" (mean squared difference) or "paper" (per-sample L2 norm); default "code".
  TORCH_ARG(std::string, form) = "code";

 public:
  void validate() const;
};

/// L2-normalized attention map: [B, C, H, W] -> [B, H*W] (rows of norm 1).
torch::Tensor attention_map(const torch::Tensor& features, double p = 2.0);
/// One pair, unweighted: [B, Cs, Hs, Ws], [B, Ct, Ht, Wt] -> scalar (see header comment).
torch::Tensor at_loss(const torch::Tensor& student, const torch::Tensor& teacher, double p = 2.0,
                      const std::string& form = "code");

/// Registry name "at"; spec keys beta, p, form; needs at least one tap pair of rank-3 taps.
class AtLoss : public DistillLoss {
 public:
  AtLoss(std::vector<TapPair> taps, AtOptions opt = {});
  std::string name() const override { return "at"; }
  std::vector<TapPair> tap_pairs() const override { return taps_; }
  void bind(const Graph& student, const Graph& teacher, torch::nn::Module& holder) override;
  torch::Tensor forward(const DistillContext& ctx) override;
  const AtOptions& options() const { return opt_; }

 private:
  std::vector<TapPair> taps_;
  AtOptions opt_;
};

}  // namespace nnopt
