// DoReFa weight quantization (Zhou et al. 2016). Formulas in quant/dorefa.h.
#include "nnopt/quant/dorefa.h"

#include <cmath>
#include <vector>

#include "nnopt/core/error.h"

namespace nnopt {

DorefaQuantizerImpl::DorefaQuantizerImpl(const QuantScheme& scheme, const torch::Tensor& clip,
                                         bool paper_grid)
    : QatQuantizerImpl(scheme), paper_grid_(paper_grid) {
  NNOPT_CHECK(scheme.is_signed() && scheme.symmetric(), ValueError,
              "DoReFa quantizes weights on a signed symmetric grid, got ", scheme.describe());
  torch::Tensor c = clip.detach().to(torch::kFloat32).reshape({-1}).clone();
  NNOPT_CHECK(scheme.per_channel() || c.numel() == 1, ValueError,
              "DoReFa: a per-tensor quantizer needs 1 clip value, got ", c.numel());
  NNOPT_CHECK(torch::isfinite(c).all().item<bool>() && (c > 0).all().item<bool>(), ValueError,
              "DoReFa: clip values must be finite and > 0");
  clip_ = register_buffer("clip", c);
}

namespace {
// max|w| per channel along the scheme's axis (keepdim: [C, 1, ...]), or over
// all of w (a scalar); with w's gradient (to the largest |w|).
torch::Tensor abs_max(const torch::Tensor& w, const QuantScheme& s) {
  if (!s.per_channel()) return w.abs().max();
  const std::vector<int64_t> dims = dims_except(w.dim(), s.ch_axis());
  return dims.empty() ? w.abs() : w.abs().amax(dims, /*keepdim=*/true);
}
}  // namespace

torch::Tensor DorefaQuantizerImpl::view_shape(const torch::Tensor& t, int64_t dim) const {
  if (!scheme_.per_channel()) return t.reshape({});
  std::vector<int64_t> shape(dim, 1);
  shape[scheme_.ch_axis()] = -1;
  return t.view(shape);
}

torch::Tensor DorefaQuantizerImpl::forward(const torch::Tensor& w) {
  if (scheme_.per_channel())
    NNOPT_CHECK(scheme_.ch_axis() < w.dim() && w.size(scheme_.ch_axis()) == clip_.numel(), ValueError,
                "DoReFa: ", clip_.numel(), " per-channel clip values do not fit a weight of shape ", w.sizes());
  // n = tanh(w) / max|tanh(w)| in [-1, 1]. tanh is odd and increasing, so
  // max|tanh(w)| = tanh(max|w|): the one reduction also gives c = max|w|.
  const torch::Tensor m = abs_max(w, scheme_);
  const torch::Tensor n = torch::tanh(w) / torch::tanh(m).clamp_min(1e-12);
  {
    // c = max|w| of this weight (per channel), a constant for the gradient.
    torch::NoGradGuard ng;
    clip_.copy_(m.detach().reshape({-1}).clamp_min(1e-8));
  }
  torch::Tensor c = view_shape(clip_, w.dim());
  if (paper_grid_) {
    const double k = std::pow(2.0, static_cast<double>(scheme_.bits())) - 1;
    torch::Tensor r = (n * 0.5 + 0.5) * k;
    r = (r.round() - r).detach() + r;
    return c * (r * (2.0 / k) - 1.0);
  }
  const double qp = std::pow(2.0, static_cast<double>(scheme_.bits() - 1)) - 1;
  torch::Tensor r = n * qp;
  r = (r.round() - r).detach() + r;
  return c * (r / qp);
}

std::string DorefaQuantizerImpl::describe() const {
  return std::string("dorefa(") + scheme_.describe() + (paper_grid_ ? ", paper grid)" : ")");
}

torch::Tensor DorefaQuantizerImpl::levels(int64_t channel) const {
  NNOPT_CHECK(channel >= 0 && channel < clip_.numel(), ValueError, "DoReFa: channel ", channel,
              " out of range [0, ", clip_.numel(), ")");
  const float c = clip_[channel].item<float>();
  if (paper_grid_) {
    const int64_t k = (int64_t{1} << scheme_.bits()) - 1;
    return (torch::arange(0, k + 1, torch::kFloat32) * (2.0 / k) - 1.0) * c;
  }
  const int64_t qp = (int64_t{1} << (scheme_.bits() - 1)) - 1;
  return torch::arange(-qp, qp + 1, torch::kFloat32) / static_cast<double>(qp) * c;
}

FakeQuantPtr DorefaQuantizerImpl::to_fake_quant() const {
  QuantScheme s = scheme_;
  torch::Tensor scale;
  if (paper_grid_) {
    NNOPT_CHECK(scheme_.bits() < 8, ValueError, "DoReFa's paper grid at ", scheme_.bits(),
                " bits (2^", scheme_.bits(), " levels without zero) needs ", scheme_.bits() + 1,
                "-bit codes; use the default symmetric grid for 8-bit integer inference");
    s.bits(scheme_.bits() + 1).narrow_range(false);
    scale = clip_ / static_cast<double>((int64_t{1} << scheme_.bits()) - 1);
  } else {
    // 2^(b-1) - 1 levels each side of zero: the narrow signed range says so
    // (the codes are the same; the scheme then tells how many there are).
    s.narrow_range(true);
    scale = clip_ / static_cast<double>((int64_t{1} << (scheme_.bits() - 1)) - 1);
  }
  auto fq = std::make_shared<FakeQuantImpl>(s, nullptr, clip_.numel());
  fq->set_qparams({scale.clone(), torch::zeros({clip_.numel()}, torch::kInt64)});
  fq->set_quantizing(true);
  return fq;
}

torch::Tensor DorefaQuantizerImpl::fq_input(const torch::Tensor& w) const {
  torch::NoGradGuard ng;
  return const_cast<DorefaQuantizerImpl*>(this)->forward(w);
}

QatQuantizerPtr make_dorefa_quantizer(const QuantizerInit& init) {
  if (!init.weight) return nullptr;  // activations keep the calibrated FakeQuant
  NNOPT_CHECK(init.value.defined(), ValueError, "DoReFa: a weight quantizer needs the weight");
  torch::Tensor w = init.value.detach().to(torch::kFloat32);
  if (init.scheme.per_channel())
    NNOPT_CHECK(init.scheme.ch_axis() < w.dim(), ValueError, "ch_axis ", init.scheme.ch_axis(),
                " is out of range for a tensor of rank ", w.dim());
  const bool paper = init.options && init.options->dorefa_paper_grid();
  return std::make_shared<DorefaQuantizerImpl>(init.scheme, abs_max(w, init.scheme).reshape({-1}).clamp_min(1e-8),
                                               paper);
}

}  // namespace nnopt
