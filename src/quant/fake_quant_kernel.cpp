// Per-tensor fake quantization as one vectorized pass forward and one
// backward, bitwise equal to LibTorch 1.13's CPU kernel
// (fake_quantize_tensor_cachemask_kernel), which calls libm fmin / fmax per
// element and does not vectorize: DoReFa's activations and every calibrated
// FakeQuant run through it.
//
// LibTorch, per element, with inv = 1.0f / scale (float):
//   q    = int64(zero_point + nearbyint(x * inv))
//   y    = (clamp(q, quant_min, quant_max) - zero_point) * scale
//   mask = quant_min <= q <= quant_max;      dx = dy * mask
// Here v = x * inv is clamped to [quant_min - zp - 1, quant_max - zp + 1]
// before rounding (rounding commutes with clamping to integer bounds), so
// the rounding trick applies and q stays exact in float; values outside the
// range land one step beyond it, where the mask is 0 and y is clamped as in
// LibTorch. One deliberate difference: where |x * inv| >= 2^63 LibTorch's
// int64 cast is undefined (on x86 it gives quant_min for a huge positive x);
// here x saturates at the nearer end. A NaN stays NaN.
#include <ATen/Parallel.h>

#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math")
#endif
#include "fused_kernels.h"

namespace nnopt {

namespace {

struct Grid {
  float s, inv, zp, qmin, qmax, lo, hi;
  Grid(double scale, int64_t zero_point, int64_t quant_min, int64_t quant_max)
      : s(static_cast<float>(scale)),
        inv(1.0f / s),
        zp(static_cast<float>(zero_point)),
        qmin(static_cast<float>(quant_min)),
        qmax(static_cast<float>(quant_max)),
        lo(qmin - zp - 1.0f),
        hi(qmax - zp + 1.0f) {}
};

// y, and mask (if not null): 1 where the code is inside the range.
__attribute__((target_clones("avx2", "default"))) void fq_forward(const float* __restrict x,
                                                                  float* __restrict y,
                                                                  uint8_t* __restrict mask,
                                                                  int64_t n, Grid g) {
  for (int64_t i = 0; i < n; ++i) {
    float v = x[i] * g.inv;
    v = v < g.lo ? g.lo : v;
    v = v > g.hi ? g.hi : v;
    const float q = detail::round_even(v) + g.zp;
    float c = q < g.qmin ? g.qmin : q;
    c = c > g.qmax ? g.qmax : c;
    y[i] = (c - g.zp) * g.s;
    if (mask) mask[i] = static_cast<uint8_t>(q == c);
  }
}

__attribute__((target_clones("avx2", "default"))) void fq_backward(const float* __restrict dy,
                                                                   const uint8_t* __restrict mask,
                                                                   float* __restrict dx,
                                                                   int64_t n) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * static_cast<float>(mask[i]);
}

class FakeQuantFunction : public torch::autograd::Function<FakeQuantFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               double scale, int64_t zero_point, int64_t quant_min,
                               int64_t quant_max) {
    const Grid g(scale, zero_point, quant_min, quant_max);
    torch::Tensor y = torch::empty_like(x);
    torch::Tensor mask = torch::empty_like(x, x.options().dtype(torch::kUInt8));  // x's layout
    const float* xp = x.data_ptr<float>();
    float* yp = y.data_ptr<float>();
    uint8_t* mp = mask.data_ptr<uint8_t>();
    at::parallel_for(0, x.numel(), detail::kFusedChunk, [&](int64_t b, int64_t e) {
      fq_forward(xp + b, yp + b, mp + b, e - b, g);
    });
    ctx->save_for_backward({mask});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::Tensor mask = ctx->get_saved_variables()[0];
    torch::Tensor dy = detail::dense_as(grads[0], mask);
    torch::Tensor dx = torch::empty_like(dy);
    const float* gp = dy.data_ptr<float>();
    const uint8_t* mp = mask.data_ptr<uint8_t>();
    float* dp = dx.data_ptr<float>();
    at::parallel_for(0, dy.numel(), detail::kFusedChunk, [&](int64_t b, int64_t e) {
      fq_backward(gp + b, mp + b, dp + b, e - b);
    });
    return {dx, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

namespace detail {

torch::Tensor fused_fake_quantize_per_tensor(const torch::Tensor& x, double scale,
                                             int64_t zero_point, int64_t quant_min,
                                             int64_t quant_max) {
  if (x.requires_grad() && torch::GradMode::is_enabled())
    return FakeQuantFunction::apply(x, scale, zero_point, quant_min, quant_max);
  const Grid g(scale, zero_point, quant_min, quant_max);
  torch::Tensor y = torch::empty_like(x);
  const float* xp = x.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  at::parallel_for(0, x.numel(), kFusedChunk, [&](int64_t b, int64_t e) {
    fq_forward(xp + b, yp + b, nullptr, e - b, g);
  });
  return y;
}

}  // namespace detail
}  // namespace nnopt
