#pragma once
// LSQ+ (Bhalgat, Lee, Nagel, Blankevoort, Kwak, "LSQ+: Improving low-bit
// quantization through learnable offsets and better initialization", CVPR
// Workshops 2020).
//
// Activations: a learnable scale s and offset beta,
//   x_bar = round(clamp((x - beta) / s, n, p)),   x_hat = x_bar * s + beta
//   d x_hat / d beta = 0 inside [n, p], 1 outside; d x_hat / d s as LSQ;
//   both gradients scaled by LSQ's g = 1 / sqrt(N * p).
// [n, p] is the scheme's [quant_min, quant_max] (unsigned: [0, 2^b - 1] as in
// the paper). Initialization: s, beta from the calibrated FakeQuant
// (beta = -zero_point * scale, so the grid starts identical); calibrate with
// the "mse" observer for the paper's MSE-based initialization of s and beta.
//
// Weights: LSQ (symmetric, no offset) with the paper's statistics-based
// initialization  s = max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(b-1)
// (mu, sigma of the weights, per output channel for per-channel schemes).
//
// Conversion to a FakeQuant rounds -beta / s to the nearest integer zero point
// (integer kernels need an integer zero point): the grid moves by at most s / 2.
#include <torch/torch.h>

#include <string>

#include "nnopt/quant/qat.h"

namespace nnopt {

/// LSQ+ activation quantizer (per tensor). Parameters "step" [1], "offset" [1].
class LsqPlusQuantizerImpl : public QatQuantizerImpl {
 public:
  LsqPlusQuantizerImpl(const QuantScheme& scheme, double step, double offset);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::string describe() const override;
  std::string kind() const override { return "lsq+"; }
  /// True while the grid's zero point round(-offset / step) lies in
  /// [qmin, qmax]; a learned offset above 0 puts the grid's lowest level
  /// above zero, which no integer zero point in range can express, and the
  /// quantizer then stays as it is (like APoT) instead of being converted.
  bool uniform() const override;
  torch::Tensor levels(int64_t channel = 0) const override;
  FakeQuantPtr to_fake_quant() const override;

  torch::Tensor step() const { return step_; }
  torch::Tensor offset() const { return offset_; }

 private:
  torch::Tensor step_, offset_;
};

/// The paper's weight step initialization: [1] or [C] (per-channel scheme along ch_axis).
torch::Tensor lsq_plus_weight_step(const torch::Tensor& weight, const QuantScheme& scheme);

/// Weights: LsqQuantizer with lsq_plus_weight_step; activations: LsqPlusQuantizer.
QatQuantizerPtr make_lsq_plus_quantizer(const QuantizerInit& init);

}  // namespace nnopt
