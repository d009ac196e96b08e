#pragma once
// Fake quantization (quantize -> dequantize in float) with the straight-through
// estimator, bit-for-bit equal to PyTorch's torch.fake_quantize_per_tensor_affine
// and torch.fake_quantize_per_channel_affine:
//   q   = zero_point + nearbyint(x * (1 / scale))      (round half to even)
//   out = (clamp(q, quant_min, quant_max) - zero_point) * scale
//   d out / d x = 1 where quant_min <= q <= quant_max, else 0
// and FakeQuant, the GraphModule transform that applies it to a weight or an
// activation, with an observer for calibration.
//
// Example:
//   auto fq = std::make_shared<nnopt::FakeQuantImpl>(nnopt::QuantScheme(4),
//                                                     nnopt::make_observer("minmax", nnopt::QuantScheme(4)));
//   fq->set_observing(true); fq->set_quantizing(false);   // calibrate: data pass unchanged
//   for (auto& x : batches) fq->forward(x);
//   fq->update_qparams();                                  // scale / zero point from the observer
//   fq->set_observing(false); fq->set_quantizing(true);
//   model->set_activation_transform("layer1.0.relu1", fq);
#include <torch/torch.h>

#include <memory>
#include <string>

#include "nnopt/nn/graph_module.h"
#include "nnopt/quant/observer.h"
#include "nnopt/quant/scheme.h"

namespace nnopt {

/// = torch.fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max)
/// bitwise, values and STE gradient; contiguous float32 runs on a vectorized
/// kernel of ours (LibTorch's calls libm per element), anything else on
/// at::fake_quantize_per_tensor_affine (except |x / scale| >= 2^63, where
/// LibTorch's int64 cast is undefined: ours saturates). x float32, any shape.
torch::Tensor fake_quantize_per_tensor(const torch::Tensor& x, double scale,
                                       int64_t zero_point, int64_t quant_min,
                                       int64_t quant_max);

/// = torch.fake_quantize_per_channel_affine(x, scale, zero_point, axis, quant_min, quant_max)
/// scale float32 [C], zero_point integer [C], C = x.size(axis).
torch::Tensor fake_quantize_per_channel(const torch::Tensor& x, const torch::Tensor& scale,
                                        const torch::Tensor& zero_point, int64_t axis,
                                        int64_t quant_min, int64_t quant_max);

/// Fake-quantizes x under `scheme` with `q` (per tensor or per channel along
/// scheme.ch_axis()). ValueError for a ch_axis out of range ("ch_axis 4 is out
/// of range for a tensor of rank 4") or qparams that do not fit (check_qparams).
torch::Tensor fake_quantize(const torch::Tensor& x, const QuantScheme& scheme, const QParams& q);

/// Plain reference of fake_quantize: a scalar loop over the elements written
/// from the formula above, no autograd. For differential tests of the ATen path.
torch::Tensor fake_quantize_reference(const torch::Tensor& x, const QuantScheme& scheme,
                                      const QParams& q);

/// A weight or activation quantizer for GraphModule.
///
/// Buffers (saved with the model): "scale" float32 [C] and "zero_point" int64
/// [C] (C = 1 per tensor). Two switches, as PyTorch's FakeQuantize
/// (enable_observer / enable_fake_quant):
///   observing:  feed each input to the observer (calibration);
///   quantizing: fake-quantize the output; when off, the input passes unchanged.
/// A new FakeQuant quantizes with scale 1, zero point 0 (PyTorch's initial
/// values) and does not observe; attach_quantizers() puts them in the
/// observe-only state until calibrate().
class FakeQuantImpl : public TransformImpl {
 public:
  /// `channels`: size of the channel axis for per-channel schemes (sizes the
  /// buffers); must be 1 for per-tensor schemes. `observer` may be null (then
  /// observing cannot be switched on); its scheme must equal `scheme`.
  explicit FakeQuantImpl(const QuantScheme& scheme, ObserverPtr observer = nullptr,
                         int64_t channels = 1);

  /// [any shape] -> [same shape]
  torch::Tensor forward(const torch::Tensor& x) override;
  /// e.g. "fakequant(s8 symmetric per-channel(0))"
  std::string describe() const override;

  const QuantScheme& scheme() const { return scheme_; }
  int64_t channels() const { return scale_.numel(); }
  ObserverPtr observer() const { return observer_; }
  void set_observer(ObserverPtr observer);

  /// Copies of the current buffers.
  QParams qparams() const;
  /// Sets the buffers (checked with check_qparams; sizes must equal channels()).
  void set_qparams(const QParams& q);
  /// Sets the buffers from the observer; ValueError if there is none or it saw nothing.
  void update_qparams();

  void set_observing(bool on);
  bool observing() const { return observing_; }
  void set_quantizing(bool on) { quantizing_ = on; }
  bool quantizing() const { return quantizing_; }

  /// Activation quantizers of pass-through ops (average pooling) reuse the
  /// qparams of the upstream quantizer at node `follows` (as PyTorch's
  /// quantized avg_pool keeps its input's scale); calibrate() copies them.
  const std::string& follows() const { return follows_; }
  void set_follows(const std::string& node) { follows_ = node; }

 private:
  QuantScheme scheme_;
  ObserverPtr observer_;
  torch::Tensor scale_, zero_point_;
  bool observing_ = false, quantizing_ = true;
  std::string follows_;
};
using FakeQuantPtr = std::shared_ptr<FakeQuantImpl>;

}  // namespace nnopt
