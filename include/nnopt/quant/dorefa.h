#pragma once
// DoReFa weight quantization (Zhou, Wu, Ni, Zhou, Wen, Zou, "DoReFa-Net:
// Training Low Bitwidth Convolutional Neural Networks with Low Bitwidth
// Gradients", arXiv:1606.06160, 2016), as also used by PACT for weights.
//
//   paper grid (2^b levels, no zero):
//     w_q = c * (2 * quantize_b(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1)
//     quantize_b(r) = round((2^b - 1) r) / (2^b - 1)
//   default grid (2^b - 1 levels, symmetric, contains zero; what integer
//   kernels with zero point 0 run, and convertible to FakeQuant at b bits):
//     w_q = c * round(Q_P * tanh(w) / max|tanh(w)|) / Q_P,   Q_P = 2^(b-1) - 1
// with a straight-through round; gradients flow through tanh and the max.
// max|tanh(w)| is taken per output channel for per-channel schemes.
//
// c: the paper maps weights to [-1, 1] and relies on the following batch norm
// to restore their scale. nnopt quantizes BN-folded models, so c restores it:
// c = max|w| of the weight being quantized (per channel or per tensor as the
// scheme), taken at every forward as a constant for the gradient and kept in
// buffer "clip" for to_fake_quant. It must follow the weight: under batch-norm
// fold simulation the weight is W * gamma / sqrt(running_var + eps), and with
// c fixed at its initial value the conv output's variance, and with it the
// running variance, became proportional to the running variance itself, which
// then drifted geometrically (x1e22-1e26 in 5 epochs of resnet20 W4A4,
// docs/results.md).
//
// DoReFa activations (the "dorefa" method) keep the calibrated FakeQuant: a
// fixed clip range and uniform grid with a straight-through estimator, the
// paper's clip(x, 0, 1) scaled to the calibrated range.
#include <torch/torch.h>

#include <string>

#include "nnopt/quant/qat.h"

namespace nnopt {

/// DoReFa weight quantizer. Buffer "clip" (c) [C].
class DorefaQuantizerImpl : public QatQuantizerImpl {
 public:
  /// clip: c per channel [C] (per-channel schemes) or [1], > 0; forward
  /// replaces it by max|w| of the weight it quantizes.
  DorefaQuantizerImpl(const QuantScheme& scheme, const torch::Tensor& clip, bool paper_grid);
  torch::Tensor forward(const torch::Tensor& w) override;
  std::string describe() const override;
  std::string kind() const override { return "dorefa"; }
  bool uniform() const override { return true; }
  torch::Tensor levels(int64_t channel = 0) const override;
  /// Default grid: b-bit symmetric, scale c / Q_P. Paper grid: (b+1)-bit
  /// symmetric, scale c / (2^b - 1) (odd codes only); ValueError at b = 8.
  FakeQuantPtr to_fake_quant() const override;
  /// The quantized weight itself (FakeQuant leaves it unchanged).
  torch::Tensor fq_input(const torch::Tensor& w) const override;
  bool paper_grid() const { return paper_grid_; }

 private:
  torch::Tensor view_shape(const torch::Tensor& t, int64_t dim) const;
  torch::Tensor clip_;
  bool paper_grid_;
};

/// Weights: DoReFa with c = max|w| (per channel for per-channel schemes; then
/// updated at every forward) and
/// options->dorefa_paper_grid(); activations: nullptr (keep the FakeQuant).
QatQuantizerPtr make_dorefa_quantizer(const QuantizerInit& init);

}  // namespace nnopt
