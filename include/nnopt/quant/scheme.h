#pragma once
// Quantization schemes: how many bits, which integer range, symmetric or
// affine, per tensor or per channel; and the scale / zero point that a
// (min, max) range gives under a scheme, computed exactly as PyTorch 1.13's
// observers do (torch/ao/quantization/observer.py, _calculate_qparams).
//
// Example:
//   auto w = nnopt::QuantScheme(4).per_channel(true);            // s4 symmetric, axis 0
//   auto a = nnopt::QuantScheme(8).is_signed(false).symmetric(false);  // PyTorch's quint8 affine
//   nnopt::QParams q = a.qparams(torch::tensor(-1.0f), torch::tensor(3.0f));
#include <torch/arg.h>
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace nnopt {

/// Quantization parameters: float32 scale and int64 zero point, both 1-D with
/// one element (per tensor) or one per channel.
struct QParams {
  torch::Tensor scale;       ///< float32 [1] or [C], > 0
  torch::Tensor zero_point;  ///< int64 [1] or [C], in [quant_min, quant_max]
};

/// A uniform quantization scheme. The constructor validates `bits`; the
/// setters cannot, so every consumer (qparams, fake_quantize, FakeQuant,
/// observers, attach) calls validate() again.
struct QuantScheme {
  /// Throws ValueError "bits must be in [2, 8], got 9".
  explicit QuantScheme(int64_t bits = 8);

  /// Bit width, 2..8. Default 8.
  TORCH_ARG(int64_t, bits) = 8;
  /// Signed integer codes ([-2^(b-1), 2^(b-1)-1], PyTorch's qint8) or unsigned
  /// ([0, 2^b - 1], quint8). Default true.
  TORCH_ARG(bool, is_signed) = true;
  /// Symmetric (scale from max|x|, fixed zero point) or affine (scale and zero
  /// point from [min, max]). Default true.
  TORCH_ARG(bool, symmetric) = true;
  /// One scale / zero point per slice along ch_axis (weights) instead of one
  /// for the tensor. Default false.
  TORCH_ARG(bool, per_channel) = false;
  /// The channel axis for per_channel (0 = output channels of conv/linear
  /// weights). Must be >= 0 and < the rank of the tensors it is used on. Default 0.
  TORCH_ARG(int64_t, ch_axis) = 0;
  /// Drop the lowest code: signed [-(2^(b-1)-1), 2^(b-1)-1] (e.g. [-127, 127]),
  /// unsigned [1, 2^b - 1], as TensorFlow's narrow_range. Default false.
  TORCH_ARG(bool, narrow_range) = false;

 public:  // TORCH_ARG leaves the section private
  /// Throws ValueError naming the bad option and its value.
  void validate() const;
  /// Smallest / largest integer code.
  int64_t quant_min() const;
  int64_t quant_max() const;
  /// True unless the range is PyTorch's default 8-bit one (bits 8, no narrow
  /// range); PyTorch's observers then pick a different symmetric unsigned zero
  /// point (see qparams).
  bool custom_range() const;

  /// Scale and zero point for the range [min_val, max_val] (float tensors, 0-d
  /// or [C]; one element for per-tensor schemes, C for per-channel ones).
  /// Mirrors torch.ao.quantization.observer._calculate_qparams (1.13):
  ///   min_neg = min(min, 0), max_pos = max(max, 0)   (0 is always representable)
  ///   symmetric: scale = max(-min_neg, max_pos) / ((qmax - qmin) / 2), clamped
  ///              below by eps = 2^-23 (float32 eps); zero point 0 when signed;
  ///              unsigned: 128 for the default 8-bit range, else
  ///              (qmin + qmax) // 2 (PyTorch with a custom quant_min/max);
  ///   affine:    scale = max((max_pos - min_neg) / (qmax - qmin), eps),
  ///              zero_point = clamp(qmin - round(min_neg / scale), qmin, qmax)
  ///              (round half to even, as torch.round).
  /// Nothing observed (min = +inf, max = -inf everywhere): scale 1, zero point 0,
  /// as PyTorch. Throws ValueError if min > max anywhere or the sizes are wrong.
  QParams qparams(const torch::Tensor& min_val, const torch::Tensor& max_val) const;

  /// Short text, e.g. "s8 symmetric per-channel(0)", "u4 affine per-tensor".
  std::string describe() const;

  bool operator==(const QuantScheme& o) const;
  bool operator!=(const QuantScheme& o) const { return !(*this == o); }
};

/// Throws ValueError unless `scale` / `zero_point` fit `scheme` for a tensor
/// whose channel count (per-channel) is `channels` (-1: any): 1-D, equal
/// sizes, one element per tensor or `channels` per channel, scale finite and
/// > 0, zero point in [quant_min, quant_max]. `what` prefixes the message.
void check_qparams(const QuantScheme& scheme, const QParams& q, int64_t channels,
                   const std::string& what);

/// The dimensions 0..rank-1 except `axis`: what a per-channel statistic
/// (along `axis`) reduces over.
std::vector<int64_t> dims_except(int64_t rank, int64_t axis);

}  // namespace nnopt
