#pragma once
// AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
// Post-Training Quantization"): learned rounding of the weights, layer by
// layer, on calibration data.
//
// For a layer with weight W and its quantizer's scale s / zero point z the
// soft-quantized weight is
//   W~ = s * (clamp(floor(W / s) + h(V) + z, qmin, qmax) - z)
//   h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1),  zeta = 1.1, gamma = -0.1
// (the rectified sigmoid), V initialized so that h(V) = W/s - floor(W/s). We
// minimize with Adam over V
//   || f(W x) - f(W~ x~) ||^2  +  lambda * sum (1 - |2 h(V) - 1|^beta)
// where x is the layer input in the float model, x~ in the quantized model
// with all earlier layers already rounded (the paper's asymmetric
// reconstruction), f the ReLU when the layer's only reader is one, and beta
// annealed linearly from beta_start to beta_end after a warm-up without the
// regularizer (paper sec. 5: lambda 0.01, beta 20 -> 2, 20 % warm-up). The
// reconstruction term is summed over channels and averaged over the batch
// and positions. The result is the hard rounding h = [V >= 0], written into
// the weight (which is then on the quantizer's grid; the scale is kept).
#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

struct AdaRoundOptions {
  /// Adam steps per layer; default 1000 (the paper uses 10k on ImageNet).
  TORCH_ARG(int64_t, iterations) = 1000;
  /// Samples per step; default 32.
  TORCH_ARG(int64_t, batch_size) = 32;
  /// Adam learning rate for V; default 1e-3.
  TORCH_ARG(double, lr) = 1e-3;
  /// lambda of the rounding regularizer; default 0.01.
  TORCH_ARG(double, reg_weight) = 0.01;
  /// beta annealed from beta_start to beta_end; defaults 20 and 2.
  TORCH_ARG(double, beta_start) = 20;
  TORCH_ARG(double, beta_end) = 2;
  /// Fraction of the steps without the regularizer; default 0.2.
  TORCH_ARG(double, warmup) = 0.2;
  /// Layers with more weight bits than this keep round-to-nearest; default 4.
  TORCH_ARG(int64_t, max_bits) = 4;
  /// Seed of the minibatch sampling; default 0.
  TORCH_ARG(uint64_t, seed) = 0;

 public:
  void validate() const;
};

/// What AdaRound did to one layer.
struct AdaRoundLayer {
  std::string node;
  int64_t bits = 0;
  double loss_nearest = 0;  ///< reconstruction error with round-to-nearest
  double loss_adaround = 0; ///< reconstruction error after AdaRound (hard rounding)
  double flipped = 0;       ///< fraction of weights rounded away from the nearest level
  double seconds = 0;
};

/// AdaRounds the weights of `quantized` (fake-quant weight quantizers
/// attached and calibrated; activation quantizers may be on) layer by layer in
/// graph order. `reference` is the float model of the same graph (no
/// quantizers). `batches` are the calibration inputs. ValueError for
/// mismatched graphs, no batches, bad options.
std::vector<AdaRoundLayer> adaround(GraphModule& quantized, GraphModule& reference,
                                    const std::vector<torch::Tensor>& batches,
                                    const AdaRoundOptions& options = {});

/// The rectified sigmoid h(V) (exposed for tests).
torch::Tensor adaround_h(const torch::Tensor& v);

}  // namespace nnopt
