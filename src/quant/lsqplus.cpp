// LSQ+ (Bhalgat et al., CVPRW 2020): learnable offset for activations and the
// statistics-based weight step initialization. Formulas in quant/lsq_plus.h.
#include <algorithm>
#include <cmath>
#include <vector>

#include "nnopt/core/error.h"
#include "nnopt/quant/lsq.h"
#include "nnopt/quant/lsq_plus.h"

namespace nnopt {

LsqPlusQuantizerImpl::LsqPlusQuantizerImpl(const QuantScheme& scheme, double step, double offset)
    : QatQuantizerImpl(scheme) {
  NNOPT_CHECK(!scheme.per_channel(), ValueError,
              "LSQ+: activation quantizers are per tensor, got ", scheme.describe());
  NNOPT_CHECK(std::isfinite(step) && step > 0, ValueError, "LSQ+: step must be > 0, got ", step);
  NNOPT_CHECK(std::isfinite(offset), ValueError, "LSQ+: offset must be finite, got ", offset);
  step_ = register_parameter("step", torch::full({1}, step, torch::kFloat32));
  offset_ = register_parameter("offset", torch::full({1}, offset, torch::kFloat32));
}

torch::Tensor LsqPlusQuantizerImpl::forward(const torch::Tensor& x) {
  const double lo = static_cast<double>(scheme_.quant_min());
  const double hi = static_cast<double>(scheme_.quant_max());
  return lsq_quantize(x, step_, offset_, lo, hi, lsq_grad_scale(x, false, hi));
}

std::string LsqPlusQuantizerImpl::describe() const { return "lsq+(" + scheme_.describe() + ")"; }

torch::Tensor LsqPlusQuantizerImpl::levels(int64_t channel) const {
  NNOPT_CHECK(channel == 0, ValueError, "LSQ+: per-tensor quantizer has only channel 0, got ",
              channel);
  const float s = lsq_step_value(step_.item<float>());
  const float b = offset_.item<float>();
  return torch::arange(scheme_.quant_min(), scheme_.quant_max() + 1, torch::kFloat32) * s + b;
}

bool LsqPlusQuantizerImpl::uniform() const {
  const float s = lsq_step_value(step_.item<float>());
  const double z = std::nearbyint(-offset_.item<double>() / s);
  return z >= static_cast<double>(scheme_.quant_min()) && z <= static_cast<double>(scheme_.quant_max());
}

FakeQuantPtr LsqPlusQuantizerImpl::to_fake_quant() const {
  NNOPT_CHECK(uniform(), ValueError, "LSQ+: offset ", offset_.item<double>(), " with step ", step_.item<double>(),
              " needs a zero point outside [", scheme_.quant_min(), ", ", scheme_.quant_max(), "]");
  const float s = lsq_step_value(step_.item<float>());
  const double z = std::nearbyint(-offset_.item<double>() / s);
  const int64_t zp = static_cast<int64_t>(
      std::min<double>(std::max<double>(z, scheme_.quant_min()), scheme_.quant_max()));
  auto fq = std::make_shared<FakeQuantImpl>(scheme_, nullptr, 1);
  fq->set_qparams({torch::full({1}, s, torch::kFloat32), torch::full({1}, zp, torch::kInt64)});
  fq->set_quantizing(true);
  return fq;
}

torch::Tensor lsq_plus_weight_step(const torch::Tensor& weight, const QuantScheme& scheme) {
  scheme.validate();
  torch::Tensor w = weight.detach().to(torch::kFloat32);
  torch::Tensor mu, sigma;
  if (scheme.per_channel()) {
    NNOPT_CHECK(scheme.ch_axis() < w.dim(), ValueError, "ch_axis ", scheme.ch_axis(),
                " is out of range for a tensor of rank ", w.dim());
    torch::Tensor m = w.movedim(scheme.ch_axis(), 0).reshape({w.size(scheme.ch_axis()), -1});
    mu = m.mean(1);
    sigma = m.size(1) > 1 ? m.std(1) : torch::zeros_like(mu);
  } else {
    mu = w.mean().reshape({1});
    sigma = (w.numel() > 1 ? w.std() : torch::zeros({})).reshape({1});
  }
  torch::Tensor s = torch::maximum((mu - 3 * sigma).abs(), (mu + 3 * sigma).abs()) /
                    std::pow(2.0, static_cast<double>(scheme.bits() - 1));
  return s.clamp_min(1e-8);
}

QatQuantizerPtr make_lsq_plus_quantizer(const QuantizerInit& init) {
  if (init.weight) {
    NNOPT_CHECK(init.value.defined(), ValueError, "LSQ+: a weight quantizer needs the weight");
    return std::make_shared<LsqQuantizerImpl>(init.scheme, true,
                                              lsq_plus_weight_step(init.value, init.scheme),
                                              init.qparams.zero_point);
  }
  const double s = init.qparams.scale.item<double>();
  const double z = static_cast<double>(init.qparams.zero_point.item<int64_t>());
  return std::make_shared<LsqPlusQuantizerImpl>(init.scheme, s, -z * s);
}

}  // namespace nnopt
