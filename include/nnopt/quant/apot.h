#pragma once
// APoT: additive powers-of-two quantization (Li, Dong, Wang, "Additive
// Powers-of-Two Quantization: An Efficient Non-uniform Discretization for
// Neural Networks", ICLR 2020).
//
// Levels (magnitudes, m bits): sums of n = ceil(m/2) terms,
//   Q = gamma * { p_0 + ... + p_{n-1} },
//   p_i in {0, 2^-i, 2^-(i+n), ..., 2^-(i+(2^k_i - 2) n)},
// k_i = 2 bits per term (the paper's k = 2); for odd m the last term has
// k = 1 bit ({0, 2^-(n-1)}). Every power of two appears in one term only, so
// the 2^m sums are distinct; gamma scales the largest to 1. m = 2: {0, 1/4,
// 1/2, 1} (powers of two); m = 1: {0, 1} (ternary with the sign).
// Signed grids use m = b - 1 magnitude bits and a sign (2^b - 1 levels);
// unsigned ones (activations after relu) m = b (2^b levels).
//
// Reparameterized clipping function (RCF), alpha learnable:
//   x_hat = alpha * Pi(clamp(x / alpha, -1, 1))      (Pi: nearest level, STE)
//   d x_hat / d alpha = Pi(x / alpha) - x / alpha inside, sign(x) outside.
// alpha's gradient is scaled by g = 1 / sqrt(N * Q_P) as LSQ scales its step's
// (Esser et al., ICLR 2020): N = the weights alpha serves or one sample's
// features, Q_P = the positive levels (2^m - 1). The paper sums the
// gradient over all elements unscaled (its code gives alpha its own learning
// rate instead). Under our protocol that sum diverged at W2A2: the signed
// activations before each residual add (which the paper leaves in float; we
// quantize them for the integer add) get a ternary grid at 2 bits, their
// alpha shrank ~15 % per step (0.59 -> 0.09 in 11 steps), and then one step's
// gradient, a sum over ~800k elements, was ~1e3 on alpha and the batch norm
// bias before it: alphas went to 1e3-1e4 and training sat at chance
// (session 16; resnet20 Fashion-MNIST, lr 0.01). With g it trains.
// Weight normalization: w_hat = (w - mu) / sigma (per layer, statistics
// detached as in the authors' code), quantized, then mapped back:
// Q(w_hat) * sigma + mu, since nnopt's models have batch norm folded (the
// paper relies on the following BN to absorb the scale, and keeps w - mu).
// The mean must come back too: under batch-norm fold simulation the layer's
// quantized weights are divided again by each channel's fold factor
// gamma / sqrt(running_var + eps), so a missing mu became -mu / factor, huge
// for a channel with a small factor; its outputs then raised running_var,
// which shrank the factor further. A W8A8 resnet20 run diverged to NaN in 22
// steps that way (session 14). For the same reason the normalization is per
// output channel when the weight scheme is per channel (mu, sigma per
// channel, one alpha): with per-layer statistics a channel with a small fold
// factor was quantized on a grid far coarser than its weights (its values
// collapsed to about mu), and dividing that error by the small factor sent
// activations to inf (resnet20 W4A4, session 15). The paper's per-layer
// normalization is the per-tensor scheme.
//
// Initialization: activations alpha = the calibrated FakeQuant's upper range
// (scale * (quant_max - zero_point)); an unsigned scheme with a zero point
// above quant_min (negative values representable, e.g. the input) uses a
// signed grid. Weights: alpha minimizing the quantization MSE of w_hat over
// 100 candidates in (0, max|w_hat|].
//
// The levels are not uniform: an APoT model cannot become a FakeQuant model
// or run on the integer kernels (convert_qat_to_fake_quant throws); it is
// evaluated as a fake-quant float model.
#include <torch/torch.h>

#include <string>

#include "nnopt/quant/qat.h"

namespace nnopt {

/// The 2^m normalized magnitude levels in [0, 1], ascending (m = 1..8).
/// ValueError for other m.
torch::Tensor apot_levels(int64_t magnitude_bits);

/// Nearest APoT level (straight-through) with the RCF clip:
/// x [any shape] -> alpha * Pi(clamp(x / alpha, lo, 1)), lo = -1 (signed) or 0;
/// one fused pass forward and one backward (gradients above; alpha's times
/// grad_scale). x float32, alpha one element, levels ascending (apot_levels),
/// grad_scale > 0; ValueError otherwise.
torch::Tensor apot_quantize(const torch::Tensor& x, const torch::Tensor& alpha,
                            const torch::Tensor& levels, bool is_signed, double grad_scale = 1.0);

namespace detail {
/// The forward kernels of apot_quantize for grids of <= 16 levels: 256-value
/// blocks (any CPU; larger grids always), or registers with AVX2 / AVX-512F.
/// All give the same bits.
enum class ApotKernel { kBlock, kAvx2, kAvx512 };
/// The fastest kernel this CPU runs (what apot_quantize uses).
ApotKernel apot_best_kernel();
/// apot_quantize's forward values by `kernel`, without autograd (tests
/// compare the kernels). ValueError when this CPU lacks the kernel.
torch::Tensor apot_forward_with(const torch::Tensor& x, double alpha, const torch::Tensor& levels,
                                bool is_signed, ApotKernel kernel);
}  // namespace detail

/// APoT weight or activation quantizer. Parameter "alpha" [1]; buffers
/// "grid" (normalized levels), "sigma" and "mu" (weights: the last
/// normalization std and mean, [C] per channel or [1]).
class ApotQuantizerImpl : public QatQuantizerImpl {
 public:
  /// channels: the weight's output channels, for per-channel schemes (the
  /// size of "mu" and "sigma"; a forward on another count is a ValueError).
  ApotQuantizerImpl(const QuantScheme& scheme, bool weight, bool signed_grid, double alpha,
                    int64_t channels = 1);
  torch::Tensor forward(const torch::Tensor& x) override;
  std::string describe() const override;
  std::string kind() const override { return "apot"; }
  bool uniform() const override { return false; }
  /// All output values (with sign); for weights times sigma, plus mu (of
  /// output channel `channel` for per-channel weights).
  torch::Tensor levels(int64_t channel = 0) const override;
  torch::Tensor clip_penalty() const override { return alpha_.square().sum(); }
  /// Activations on the unsigned grid clip at 0 with zero gradients below
  /// it, as a ReLU in front would (TransformImpl::absorbs_relu).
  bool absorbs_relu() const override { return !weight_ && !signed_; }

  torch::Tensor alpha() const { return alpha_; }
  /// The factor on alpha's gradient for input x: 1 / sqrt(N * Q_P) (above).
  double alpha_grad_scale(const torch::Tensor& x) const;
  bool signed_grid() const { return signed_; }
  /// Channels of "mu" / "sigma" (per-channel weights), else 1.
  int64_t channels() const { return mu_.numel(); }

 private:
  bool weight_, signed_;
  torch::Tensor alpha_, grid_, sigma_, mu_;
};

/// From the calibrated FakeQuant as described above.
QatQuantizerPtr make_apot_quantizer(const QuantizerInit& init);

}  // namespace nnopt
