#pragma once
// PACT: parameterized clipping activation (Choi, Wang, Venkataramani,
// Chuang, Srinivasan, Gopalakrishnan, "PACT: Parameterized Clipping
// Activation for Quantized Neural Networks", arXiv:1805.06085, 2018).
//
//   y   = clamp(x, 0, alpha)           = 0.5 (|x| - |x - alpha| + alpha)
//   y_q = round(y * (2^b - 1) / alpha) * alpha / (2^b - 1)
//   d y_q / d x     = 1 if 0 <= x <= alpha else 0   (straight-through round)
//   d y_q / d alpha = 1 if x >= alpha else 0
// and alpha carries an L2 penalty lambda_alpha/2 * alpha^2 (QatOptions::clip_decay,
// added by the QAT callback). Weights are quantized with DoReFa, as in the paper.
//
// The grid follows the replaced FakeQuant: codes [quant_min, quant_max] with
// its calibrated zero point z (z = 0 for activations after relu, giving the
// paper's grid). With Q_P = quant_max - z, Q_N = z - quant_min the step is
// alpha / Q_P and the clip range [-alpha Q_N / Q_P, alpha]; below the range
// d y_q / d alpha = -Q_N / Q_P. alpha starts at the calibrated upper end
// scale * Q_P, so the grid starts identical to the FakeQuant's.
#include <torch/torch.h>

#include <string>

#include "nnopt/quant/qat.h"

namespace nnopt {

/// PACT activation quantizer (per tensor). Parameter "alpha" [1]; buffer "zero_point" [1].
class PactQuantizerImpl : public QatQuantizerImpl {
 public:
  PactQuantizerImpl(const QuantScheme& scheme, double alpha, int64_t zero_point);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::string describe() const override;
  /// True when the clip range starts at 0 (qmin == zero point, the usual
  /// unsigned case): below it PACT passes no gradient to x or alpha.
  bool absorbs_relu() const override;
  std::string kind() const override { return "pact"; }
  bool uniform() const override { return true; }
  torch::Tensor levels(int64_t channel = 0) const override;
  FakeQuantPtr to_fake_quant() const override;
  torch::Tensor clip_penalty() const override { return alpha_.square().sum(); }

  torch::Tensor alpha() const { return alpha_; }

 private:
  torch::Tensor step() const;  // alpha / Q_P, with gradient to alpha
  torch::Tensor alpha_, zero_point_;
};

/// Activations: PactQuantizer; weights: DoReFa (make_dorefa_quantizer).
QatQuantizerPtr make_pact_quantizer(const QuantizerInit& init);

}  // namespace nnopt
