// PACT (Choi et al. 2018): learnable activation clip on the fused LSQ kernel
// with PACT's straight-through gradient. Formulas in quant/pact.h.
#include "nnopt/quant/pact.h"

#include <algorithm>
#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/quant/dorefa.h"
#include "nnopt/quant/lsq.h"

namespace nnopt {

PactQuantizerImpl::PactQuantizerImpl(const QuantScheme& scheme, double alpha, int64_t zero_point)
    : QatQuantizerImpl(scheme) {
  NNOPT_CHECK(!scheme.per_channel(), ValueError,
              "PACT: activation quantizers are per tensor, got ", scheme.describe());
  NNOPT_CHECK(zero_point >= scheme.quant_min() && zero_point < scheme.quant_max(), ValueError,
              "PACT: zero point ", zero_point, " leaves no positive codes in [",
              scheme.quant_min(), ", ", scheme.quant_max(), "]");
  NNOPT_CHECK(std::isfinite(alpha) && alpha > 0, ValueError, "PACT: alpha must be > 0, got ", alpha);
  alpha_ = register_parameter("alpha", torch::full({1}, alpha, torch::kFloat32));
  zero_point_ = register_buffer("zero_point", torch::full({1}, zero_point, torch::kInt64));
}

torch::Tensor PactQuantizerImpl::step() const {
  const int64_t z = zero_point_.item<int64_t>();
  return alpha_.clamp_min(1e-8) / static_cast<double>(scheme_.quant_max() - z);
}

torch::Tensor PactQuantizerImpl::forward(const torch::Tensor& x) {
  const int64_t z = zero_point_.item<int64_t>();
  const double lo = static_cast<double>(scheme_.quant_min() - z);
  const double hi = static_cast<double>(scheme_.quant_max() - z);
  // d/d step of the clipped values is lo or hi; times d step / d alpha = 1 / hi
  // gives PACT's 1 (x >= alpha) and -Q_N / Q_P (below the range).
  return lsq_quantize(x, step(), torch::Tensor(), lo, hi, 1.0, /*step_grad_inside=*/false);
}

bool PactQuantizerImpl::absorbs_relu() const {
  return scheme_.quant_min() == zero_point_.item<int64_t>();
}

std::string PactQuantizerImpl::describe() const { return "pact(" + scheme_.describe() + ")"; }

torch::Tensor PactQuantizerImpl::levels(int64_t channel) const {
  NNOPT_CHECK(channel == 0, ValueError, "PACT: per-tensor quantizer has only channel 0, got ",
              channel);
  const int64_t z = zero_point_.item<int64_t>();
  const float s = step().item<float>();
  return torch::arange(scheme_.quant_min() - z, scheme_.quant_max() - z + 1, torch::kFloat32) * s;
}

FakeQuantPtr PactQuantizerImpl::to_fake_quant() const {
  auto fq = std::make_shared<FakeQuantImpl>(scheme_, nullptr, 1);
  fq->set_qparams({step().detach().reshape({1}).clone(), zero_point_.clone()});
  fq->set_quantizing(true);
  return fq;
}

QatQuantizerPtr make_pact_quantizer(const QuantizerInit& init) {
  if (init.weight) return make_dorefa_quantizer(init);
  const double s = init.qparams.scale.item<double>();
  const int64_t z = init.qparams.zero_point.item<int64_t>();
  return std::make_shared<PactQuantizerImpl>(init.scheme,
                                             s * static_cast<double>(init.scheme.quant_max() - z), z);
}

}  // namespace nnopt
