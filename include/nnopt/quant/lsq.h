#pragma once
// LSQ: learned step size quantization (Esser, McKinstry, Bablani, Appuswamy,
// Modha, "Learned Step Size Quantization", ICLR 2020).
//
//   v = x / s,  v_bar = round(clamp(v, -Q_N, Q_P)),  x_hat = v_bar * s
//   d x_hat / d x = 1 if -Q_N <= v <= Q_P else 0          (straight-through round)
//   d x_hat / d s = round(v) - v   if -Q_N <= v <= Q_P
//                   -Q_N           if v < -Q_N
//                   Q_P            if v > Q_P
//   and the step's gradient is scaled by g = 1 / sqrt(N * Q_P), N = number of
//   weights per step (weights) or of features per sample (activations).
//
// Here the integer range comes from the QuantScheme and the calibrated zero
// point z of the FakeQuant it replaces: Q_N = z - quant_min, Q_P = quant_max - z
// (signed symmetric: Q_N = 2^(b-1), Q_P = 2^(b-1) - 1, as in the paper; an
// unsigned activation grid with z = 0 gives Q_N = 0, Q_P = 2^b - 1). The output
// is then exactly FakeQuant(scale = s, zero_point = z).
//
// LSQ+ (lsq_plus.h) generalizes the same kernel with a learnable offset.
#include <torch/torch.h>

#include <string>

#include "nnopt/quant/qat.h"

namespace nnopt {

/// The step a quantizer runs with: |step|, at least 1e-8. With momentum SGD a
/// step parameter can be pushed through 0 (seen on per-channel weight steps:
/// up to 11 % of them in a 5-epoch resnet20 run). Its magnitude then keeps
/// working as the step and gets the gradient (times sign(step)); a step
/// clamped at a tiny positive value would instead zero its channel for good,
/// with no gradient left to bring it back.
float lsq_step_value(float step);
torch::Tensor lsq_step_value(const torch::Tensor& step);

/// LSQ's gradient scale for a per-tensor step (or clip) of x: g = 1 / sqrt(N *
/// max(Q_P, 1)) (Esser et al., ICLR 2020), N = the values it serves: all of x
/// for weights (or x without a batch axis, < 2-d), one sample's features for
/// activations [batch, ...].
double lsq_grad_scale(const torch::Tensor& x, bool weight, double qp);

/// The fused LSQ / LSQ+ / PACT operator (one pass forward, one pass backward):
///   out = clamp(round((x - offset) / step), lo, hi) * step + offset
/// x float32 (any shape), step and offset 1-element float32 tensors (offset may
/// be undefined = 0); the step used is lsq_step_value(step). round is
/// half-to-even on x * (1 / step), as FakeQuant.
/// Gradients: x as in LSQ (1 inside [lo, hi], else 0); offset 0 inside, 1
/// outside (times grad_scale); step as LSQ above (times grad_scale) if
/// `step_grad_inside`, else only the outside terms lo / hi (PACT's
/// straight-through clip, no grad_scale applied when grad_scale = 1).
/// ValueError if step is not 1-element, lo >= hi.
torch::Tensor lsq_quantize(const torch::Tensor& x, const torch::Tensor& step,
                           const torch::Tensor& offset, double lo, double hi, double grad_scale,
                           bool step_grad_inside = true);

/// LSQ quantizer for a weight (per tensor or per output channel, as the
/// scheme) or an activation (per tensor).
/// Parameter "step" float32 [C]; buffer "zero_point" int64 [C] (fixed).
class LsqQuantizerImpl : public QatQuantizerImpl {
 public:
  /// step: initial step sizes [C] (> 0); zero_point [C] within the scheme's range.
  LsqQuantizerImpl(const QuantScheme& scheme, bool weight, const torch::Tensor& step,
                   const torch::Tensor& zero_point);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::string describe() const override;
  std::string kind() const override { return "lsq"; }
  bool uniform() const override { return true; }
  torch::Tensor levels(int64_t channel = 0) const override;
  FakeQuantPtr to_fake_quant() const override;
  /// Per-tensor activation quantizers whose range starts at 0 (qmin == zero point).
  bool absorbs_relu() const override;

  torch::Tensor step() const { return step_; }
  bool is_weight() const { return weight_; }

 private:
  bool weight_;
  torch::Tensor step_, zero_point_;
};

/// The LSQ weight / activation quantizer, step = calibrated scale (the
/// calibrated zero point is kept).
QatQuantizerPtr make_lsq_quantizer(const QuantizerInit& init);

}  // namespace nnopt
