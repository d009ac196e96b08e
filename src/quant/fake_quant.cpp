// Fake quantization (PyTorch-exact, STE) and the FakeQuant transform.
#include "nnopt/quant/fake_quant.h"

#include <cmath>

#include "nnopt/core/error.h"
#include "fused_kernels.h"

namespace nnopt {

torch::Tensor fake_quantize_per_tensor(const torch::Tensor& x, double scale,
                                       int64_t zero_point, int64_t quant_min,
                                       int64_t quant_max) {
  // The same values and gradient, vectorized (fake_quant_kernel.cpp); other
  // dtypes, layouts and bad arguments go to LibTorch (which reports the latter).
  if (x.scalar_type() == torch::kFloat32 &&
      (x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast)) && quant_min <= zero_point &&
      zero_point <= quant_max && quant_min < quant_max && quant_max - quant_min <= 65535)
    return detail::fused_fake_quantize_per_tensor(x, scale, zero_point, quant_min, quant_max);
  return at::fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min, quant_max);
}

torch::Tensor fake_quantize_per_channel(const torch::Tensor& x, const torch::Tensor& scale,
                                        const torch::Tensor& zero_point, int64_t axis,
                                        int64_t quant_min, int64_t quant_max) {
  // ATen wants float32 scales and int32 zero points (a float zero point would
  // select the float-qparams formula instead).
  return at::fake_quantize_per_channel_affine(x, scale.to(torch::kFloat32),
                                              zero_point.to(torch::kInt32), axis, quant_min,
                                              quant_max);
}

namespace {
void check_input(const torch::Tensor& x, const QuantScheme& s, const QParams& q) {
  NNOPT_CHECK(x.defined(), ValueError, "fake_quantize: undefined tensor");
  NNOPT_CHECK(x.scalar_type() == torch::kFloat32, ValueError,
              "fake_quantize: needs a float32 tensor, got ", x.scalar_type());
  if (s.per_channel()) {
    NNOPT_CHECK(s.ch_axis() < x.dim(), ValueError, "ch_axis ", s.ch_axis(),
                " is out of range for a tensor of rank ", x.dim());
    check_qparams(s, q, x.size(s.ch_axis()), "fake_quantize");
  } else {
    check_qparams(s, q, 1, "fake_quantize");
  }
}
}  // namespace

torch::Tensor fake_quantize(const torch::Tensor& x, const QuantScheme& s, const QParams& q) {
  check_input(x, s, q);
  if (!s.per_channel())
    return fake_quantize_per_tensor(x, q.scale.item<float>(), q.zero_point.item<int64_t>(),
                                    s.quant_min(), s.quant_max());
  return fake_quantize_per_channel(x, q.scale, q.zero_point, s.ch_axis(), s.quant_min(),
                                   s.quant_max());
}

torch::Tensor fake_quantize_reference(const torch::Tensor& x_in, const QuantScheme& s,
                                      const QParams& q) {
  check_input(x_in, s, q);
  auto x = x_in.detach().contiguous();
  auto out = torch::empty_like(x);
  auto scale = q.scale.to(torch::kFloat32).contiguous();
  auto zp = q.zero_point.to(torch::kInt64).contiguous();
  // View x as [outer, C, inner] (C = 1 per tensor).
  int64_t outer = 1, C = 1, inner = x.numel();
  if (s.per_channel()) {
    const int64_t ax = s.ch_axis();
    C = x.size(ax);
    inner = 1;
    for (int64_t d = 0; d < ax; ++d) outer *= x.size(d);
    for (int64_t d = ax + 1; d < x.dim(); ++d) inner *= x.size(d);
  }
  const float* xp = x.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float* sp = scale.data_ptr<float>();
  const int64_t* zpp = zp.data_ptr<int64_t>();
  const double qmin = static_cast<double>(s.quant_min()), qmax = static_cast<double>(s.quant_max());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t c = 0; c < C; ++c) {
      const float sc = sp[c];
      const float inv_scale = 1.0f / sc;
      const int64_t z = zpp[c];
      const int64_t base = (o * C + c) * inner;
      for (int64_t i = 0; i < inner; ++i) {
        const float qf = static_cast<float>(z) + std::nearbyint(xp[base + i] * inv_scale);
        const int64_t qv = static_cast<int64_t>(std::fmin(std::fmax(qf, qmin), qmax));
        op[base + i] = static_cast<float>(qv - z) * sc;
      }
    }
  return out;
}

FakeQuantImpl::FakeQuantImpl(const QuantScheme& scheme, ObserverPtr observer, int64_t channels)
    : scheme_(scheme) {
  scheme_.validate();
  NNOPT_CHECK(channels >= 1, ValueError, "FakeQuant: channels must be >= 1, got ", channels);
  NNOPT_CHECK(scheme_.per_channel() || channels == 1, ValueError,
              "FakeQuant: a per-tensor scheme has 1 channel, got ", channels);
  scale_ = register_buffer("scale", torch::ones({channels}, torch::kFloat32));
  zero_point_ = register_buffer("zero_point", torch::zeros({channels}, torch::kInt64));
  set_observer(std::move(observer));
}

torch::Tensor FakeQuantImpl::forward(const torch::Tensor& x) {
  if (observing_) observer_->observe(x);
  if (!quantizing_) return x;
  return fake_quantize(x, scheme_, {scale_, zero_point_});
}

std::string FakeQuantImpl::describe() const {
  return str_cat("fakequant(", scheme_.describe(), ")");
}

void FakeQuantImpl::set_observer(ObserverPtr observer) {
  NNOPT_CHECK(!observer || observer->scheme() == scheme_, ValueError,
              "FakeQuant: observer scheme ", observer ? observer->scheme().describe() : "",
              " differs from ", scheme_.describe());
  observer_ = std::move(observer);
  if (!observer_) observing_ = false;
}

QParams FakeQuantImpl::qparams() const { return {scale_.clone(), zero_point_.clone()}; }

void FakeQuantImpl::set_qparams(const QParams& q) {
  check_qparams(scheme_, q, channels(), "FakeQuant");
  torch::NoGradGuard ng;
  scale_.copy_(q.scale.to(torch::kFloat32));
  zero_point_.copy_(q.zero_point.to(torch::kInt64));
}

void FakeQuantImpl::update_qparams() {
  NNOPT_CHECK(observer_ != nullptr, ValueError, "FakeQuant: no observer to take qparams from");
  set_qparams(observer_->qparams());
}

void FakeQuantImpl::set_observing(bool on) {
  NNOPT_CHECK(!on || observer_ != nullptr, ValueError,
              "FakeQuant: cannot observe without an observer");
  observing_ = on;
}

}  // namespace nnopt
