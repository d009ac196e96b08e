#pragma once
// Similarity-preserving distillation (Tung & Mori 2019, "Similarity-Preserving
// Knowledge Distillation", ICCV, arXiv:1907.09682), eq. (2)-(4):
//   Q = features reshaped to [b, -1];  G = Q Q^T  [b, b];  G~ = rows of G / their L2 norm
//   sp = gamma * sum over pairs of ||G~_t - G~_s||_F^2 / b^2
// gamma = 3000 is the paper's value for CIFAR-10 (sec. 4.1). Any tap shapes
// work (only the batch size must agree), so student and teacher layers need
// not match in channels or size.
#include <torch/arg.h>
#include <torch/torch.h>

#include <vector>

#include "nnopt/distill/distill_loss.h"

namespace nnopt {

struct SpOptions {
  SpOptions() = default;
  explicit SpOptions(double gamma) : gamma_(gamma) {}
  /// gamma (>= 0); default 3000. Spec key "gamma".
  TORCH_ARG(double, gamma) = 3000.0;

 public:
  void validate() const;
};

/// Row-normalized batch similarity: [B, ...] -> [B, B].
torch::Tensor similarity_matrix(const torch::Tensor& features);
/// One pair, unweighted: ||G~_t - G~_s||_F^2 / b^2. [B, ...], [B, ...] -> scalar.
torch::Tensor sp_loss(const torch::Tensor& student, const torch::Tensor& teacher);

/// Registry name "sp"; spec key gamma; needs at least one tap pair.
class SpLoss : public DistillLoss {
 public:
  SpLoss(std::vector<TapPair> taps, SpOptions opt = {});
  std::string name() const override { return "sp"; }
  std::vector<TapPair> tap_pairs() const override { return taps_; }
  void bind(const Graph& student, const Graph& teacher, torch::nn::Module& holder) override;
  torch::Tensor forward(const DistillContext& ctx) override;
  const SpOptions& options() const { return opt_; }

 private:
  std::vector<TapPair> taps_;
  SpOptions opt_;
};

}  // namespace nnopt
