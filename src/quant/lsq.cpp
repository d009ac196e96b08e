// LSQ (Esser et al., ICLR 2020): the fused quantize operator shared with LSQ+
// and PACT, and the LSQ quantizer. Formulas in include/nnopt/quant/lsq.h.
#include "nnopt/quant/lsq.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "nnopt/core/error.h"

// The two element loops below are the QAT hot path: let GCC vectorize them fully.
// no-trapping-math lets it turn the compare-and-selects into vector min / max /
// masks (without it none of these loops vectorized); values are unchanged.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math")
#endif
// After the pragma, so that round_even inlines into the loops.
#include "fused_kernels.h"

namespace nnopt {

namespace {

constexpr float kMinStep = 1e-8f;

using detail::round_even;

// out = clamp(round((x - b) * inv), lo, hi) * s + b; branch-free so that GCC
// vectorizes it (an AVX2 clone beside the baseline one; no FMA, so both give
// the same values). clamp-then-round equals round-then-clamp for integer bounds.
__attribute__((target_clones("avx2", "default"))) void forward_range(const float* __restrict x, float* __restrict out, int64_t n, float s,
                   float inv, float b, float lo, float hi) {
  for (int64_t i = 0; i < n; ++i) {
    float v = (x[i] - b) * inv;
    v = v < lo ? lo : v;
    v = v > hi ? hi : v;
    out[i] = round_even(v) * s + b;
  }
}

// dx, and the chunk's sums of dy * d(out)/d(step) (before g) and dy * d(out)/d(offset).
// Branch-free (the outside-the-range test is a 0/1 factor) with eight partial
// sums, so that GCC vectorizes it without reassociating the reduction.
__attribute__((target_clones("avx2", "default"))) void backward_range(const float* __restrict x, const float* __restrict dy, float* __restrict dx,
                    int64_t n, float inv, float b, float lo, float hi, bool inside,
                    double* ds_out, double* db_out) {
  constexpr int kLanes = 8;
  float sacc[kLanes] = {0}, bacc[kLanes] = {0};
  const float in_scale = inside ? 1.0f : 0.0f;
  // One element: dx, and its step and offset terms.
  auto element = [&](int64_t i, float& ds, float& db) {
    const float v = (x[i] - b) * inv;
    const float d = dy[i];
    float vc = v < lo ? lo : v;
    vc = vc > hi ? hi : vc;
    const float out = vc != v ? 1.0f : 0.0f;  // 1 outside [lo, hi]
    dx[i] = (1.0f - out) * d;
    ds = d * (out * vc + (1.0f - out) * (round_even(vc) - v) * in_scale);
    db = out * d;
  };
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      float ds, db;
      element(i + j, ds, db);
      sacc[j] += ds;
      bacc[j] += db;
    }
  }
  double ds = 0, db = 0;
  for (; i < n; ++i) {
    float s1, b1;
    element(i, s1, b1);
    ds += s1;
    db += b1;
  }
  for (int j = 0; j < kLanes; ++j) {
    ds += sacc[j];
    db += bacc[j];
  }
  *ds_out = ds;
  *db_out = db;
}

// Forward and backward in one pass each over dense float32 data (NCHW or
// channels-last, detail::dense).
class LsqFunction : public torch::autograd::Function<LsqFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& step, const torch::Tensor& offset, double lo,
                               double hi, double grad_scale, bool step_grad_inside,
                               bool has_offset) {
    torch::Tensor xc = detail::dense(x);
    const float raw = step.item<float>();
    const float s = lsq_step_value(raw);
    const float inv = 1.0f / s;
    const float b = has_offset ? offset.item<float>() : 0.0f;
    const float flo = static_cast<float>(lo), fhi = static_cast<float>(hi);
    torch::Tensor out = torch::empty_like(xc);
    const float* xp = xc.data_ptr<float>();
    float* op = out.data_ptr<float>();
    at::parallel_for(0, xc.numel(), detail::kFusedChunk, [&](int64_t begin, int64_t end) {
      forward_range(xp + begin, op + begin, end - begin, s, inv, b, flo, fhi);
    });
    ctx->save_for_backward({xc});
    ctx->saved_data["s"] = static_cast<double>(s);
    ctx->saved_data["sign"] = raw < 0 ? -1.0 : 1.0;
    ctx->saved_data["b"] = static_cast<double>(b);
    ctx->saved_data["lo"] = lo;
    ctx->saved_data["hi"] = hi;
    ctx->saved_data["g"] = grad_scale;
    ctx->saved_data["inside"] = step_grad_inside;
    ctx->saved_data["has_offset"] = has_offset;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    torch::Tensor xc = ctx->get_saved_variables()[0];
    torch::Tensor dy = detail::dense_as(grads[0], xc);
    const float s = static_cast<float>(ctx->saved_data["s"].toDouble());
    const float inv = 1.0f / s;
    const float b = static_cast<float>(ctx->saved_data["b"].toDouble());
    const float lo = static_cast<float>(ctx->saved_data["lo"].toDouble());
    const float hi = static_cast<float>(ctx->saved_data["hi"].toDouble());
    const double g = ctx->saved_data["g"].toDouble();
    const bool inside = ctx->saved_data["inside"].toBool();
    const bool has_offset = ctx->saved_data["has_offset"].toBool();
    torch::Tensor dx = torch::empty_like(xc);
    const float* xp = xc.data_ptr<float>();
    const float* gp = dy.data_ptr<float>();
    float* dp = dx.data_ptr<float>();
    const auto sums = detail::chunked_sums<2>(xc.numel(), [&](int64_t b0, int64_t e, double* sum) {
      backward_range(xp + b0, gp + b0, dp + b0, e - b0, inv, b, lo, hi, inside, &sum[0], &sum[1]);
    });
    const double dss = sums[0], dbs = sums[1];
    const double sign = ctx->saved_data["sign"].toDouble();  // d|step| / d step
    torch::Tensor gstep = torch::full({1}, dss * g * sign, torch::kFloat32);
    torch::Tensor goff = has_offset ? torch::full({1}, dbs * g, torch::kFloat32) : torch::Tensor();
    return {dx,
            gstep,
            goff,
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

// Per-channel LSQ on a tensor whose channel axis is 0 (conv / linear
// weights): each channel's contiguous block goes through the same loops as the
// per-tensor operator, with the channel's |step| (floored at kMinStep) and
// integer range and no offset. Values equal the torch-ops formula
// (x * (1 / s), clamp, round half to even, * s); the step gradient is
// g * sign(step) * the block's sum, in double.
class LsqPerChannelFunction : public torch::autograd::Function<LsqPerChannelFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& step, const torch::Tensor& lo,
                               const torch::Tensor& hi, double grad_scale) {
    torch::Tensor xc = x.contiguous();
    torch::Tensor sc = step.detach().contiguous();
    const int64_t channels = sc.numel(), per = xc.numel() / channels;
    torch::Tensor out = torch::empty_like(xc);
    const float* xp = xc.data_ptr<float>();
    float* op = out.data_ptr<float>();
    const float *sp = sc.data_ptr<float>(), *lp = lo.data_ptr<float>(), *hp = hi.data_ptr<float>();
    at::parallel_for(0, channels, std::max<int64_t>(1, detail::kFusedChunk / std::max<int64_t>(1, per)),
                     [&](int64_t c0, int64_t c1) {
                       for (int64_t c = c0; c < c1; ++c) {
                         const float s = lsq_step_value(sp[c]);
                         forward_range(xp + c * per, op + c * per, per, s, 1.0f / s, 0.0f, lp[c], hp[c]);
                       }
                     });
    ctx->save_for_backward({xc, sc, lo, hi});
    ctx->saved_data["g"] = grad_scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &xc = saved[0], &sc = saved[1];
    const double g = ctx->saved_data["g"].toDouble();
    torch::Tensor dy = grads[0].contiguous();
    const int64_t channels = sc.numel(), per = xc.numel() / channels;
    torch::Tensor dx = torch::empty_like(xc);
    torch::Tensor gstep = torch::empty({channels}, torch::kFloat32);
    const float *xp = xc.data_ptr<float>(), *gp = dy.data_ptr<float>();
    float *dp = dx.data_ptr<float>(), *gs = gstep.data_ptr<float>();
    const float *sp = sc.data_ptr<float>(), *lp = saved[2].data_ptr<float>(), *hp = saved[3].data_ptr<float>();
    at::parallel_for(0, channels, std::max<int64_t>(1, detail::kFusedChunk / std::max<int64_t>(1, per)),
                     [&](int64_t c0, int64_t c1) {
                       for (int64_t c = c0; c < c1; ++c) {
                         double ds = 0, db = 0;
                         backward_range(xp + c * per, gp + c * per, dp + c * per, per,
                                        1.0f / lsq_step_value(sp[c]), 0.0f, lp[c], hp[c], true, &ds, &db);
                         gs[c] = static_cast<float>(ds * g * (sp[c] < 0 ? -1.0 : 1.0));
                       }
                     });
    return {dx, gstep, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

float lsq_step_value(float step) { return std::max(std::abs(step), kMinStep); }

torch::Tensor lsq_step_value(const torch::Tensor& step) {
  // Value max(|step|, 1e-8); gradient that of |step| (sign(step), 1 at 0), also
  // below the floor.
  torch::Tensor a = step * torch::where(step < 0, -torch::ones_like(step), torch::ones_like(step)).detach();
  return a + (a.clamp_min(kMinStep) - a).detach();
}

torch::Tensor lsq_quantize(const torch::Tensor& x, const torch::Tensor& step,
                           const torch::Tensor& offset, double lo, double hi, double grad_scale,
                           bool step_grad_inside) {
  NNOPT_CHECK(x.scalar_type() == torch::kFloat32, ValueError,
              "lsq_quantize: x must be float32, got ", x.scalar_type());
  NNOPT_CHECK(step.numel() == 1, ValueError, "lsq_quantize: step must have 1 element, got ",
              step.numel());
  NNOPT_CHECK(!offset.defined() || offset.numel() == 1, ValueError,
              "lsq_quantize: offset must have 1 element, got ", offset.numel());
  NNOPT_CHECK(lo < hi, ValueError, "lsq_quantize: the integer range must have lo < hi, got [", lo,
              ", ", hi, "]");
  torch::Tensor s = step.reshape({1});
  // Custom autograd functions take defined tensors only: a constant 0 stands for no offset.
  torch::Tensor b = offset.defined() ? offset.reshape({1}) : torch::zeros({1});
  return LsqFunction::apply(x, s, b, lo, hi, grad_scale, step_grad_inside, offset.defined());
}

LsqQuantizerImpl::LsqQuantizerImpl(const QuantScheme& scheme, bool weight,
                                   const torch::Tensor& step, const torch::Tensor& zero_point)
    : QatQuantizerImpl(scheme), weight_(weight) {
  NNOPT_CHECK(weight || !scheme.per_channel(), ValueError,
              "LSQ: activation quantizers are per tensor, got ", scheme.describe());
  torch::Tensor s = step.detach().to(torch::kFloat32).reshape({-1}).clone();
  check_qparams(scheme, {s, zero_point.to(torch::kInt64).reshape({-1})}, -1, "LSQ init");
  NNOPT_CHECK(scheme.per_channel() || s.numel() == 1, ValueError,
              "LSQ: a per-tensor quantizer needs 1 step, got ", s.numel());
  step_ = register_parameter("step", s);
  zero_point_ = register_buffer("zero_point", zero_point.to(torch::kInt64).reshape({-1}).clone());
}

double lsq_grad_scale(const torch::Tensor& x, bool weight, double qp) {
  const int64_t n = weight || x.dim() < 2 ? x.numel() : x.numel() / std::max<int64_t>(1, x.size(0));
  return 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, n)) * std::max(qp, 1.0));
}

torch::Tensor LsqQuantizerImpl::forward(const torch::Tensor& x) {
  const int64_t qmin = scheme_.quant_min(), qmax = scheme_.quant_max();
  if (!scheme_.per_channel()) {
    const int64_t z = zero_point_.item<int64_t>();
    const double lo = static_cast<double>(qmin - z), hi = static_cast<double>(qmax - z);
    return lsq_quantize(x, step_, torch::Tensor(), lo, hi, lsq_grad_scale(x, weight_, hi));
  }
  // Per output channel (weights).
  const int64_t axis = scheme_.ch_axis();
  NNOPT_CHECK(axis < x.dim() && x.size(axis) == step_.numel(), ValueError, "LSQ: ",
              step_.numel(), " per-channel steps do not fit a tensor of shape ", x.sizes());
  torch::Tensor lo = (qmin - zero_point_).to(torch::kFloat32);
  torch::Tensor hi = (qmax - zero_point_).to(torch::kFloat32);
  const double n = static_cast<double>(x.numel() / step_.numel());
  const double g = 1.0 / std::sqrt(n * std::max<double>(hi.max().item<float>(), 1.0));
  if (axis == 0 && x.scalar_type() == torch::kFloat32)
    return LsqPerChannelFunction::apply(x, step_, lo, hi, g);
  // Another axis: the same formula with torch ops.
  std::vector<int64_t> shape(x.dim(), 1);
  shape[axis] = -1;
  lo = lo.view(shape);
  hi = hi.view(shape);
  torch::Tensor s = lsq_step_value(step_);
  s = (s - s * g).detach() + s * g;  // value s, gradient scaled by g
  s = s.view(shape);
  torch::Tensor v = x * s.reciprocal();
  v = torch::maximum(torch::minimum(v, hi), lo);
  v = (v.round() - v).detach() + v;  // straight-through round
  return v * s;
}

bool LsqQuantizerImpl::absorbs_relu() const {
  // Below the range both the data and the step gradient are 0 (the step's is
  // qmin - z = 0), as for an input of 0 inside the range (round(0) - 0 = 0).
  return !weight_ && !scheme_.per_channel() && scheme_.quant_min() == zero_point_.item<int64_t>();
}

std::string LsqQuantizerImpl::describe() const { return "lsq(" + scheme_.describe() + ")"; }

torch::Tensor LsqQuantizerImpl::levels(int64_t channel) const {
  NNOPT_CHECK(channel >= 0 && channel < step_.numel(), ValueError, "LSQ: channel ", channel,
              " out of range [0, ", step_.numel(), ")");
  const int64_t z = zero_point_[channel].item<int64_t>();
  const float s = lsq_step_value(step_[channel].item<float>());
  return torch::arange(scheme_.quant_min() - z, scheme_.quant_max() - z + 1, torch::kFloat32) * s;
}

FakeQuantPtr LsqQuantizerImpl::to_fake_quant() const {
  auto fq = std::make_shared<FakeQuantImpl>(scheme_, nullptr, step_.numel());
  fq->set_qparams({lsq_step_value(step_.detach()).clone(), zero_point_.clone()});
  fq->set_quantizing(true);
  return fq;
}

QatQuantizerPtr make_lsq_quantizer(const QuantizerInit& init) {
  return std::make_shared<LsqQuantizerImpl>(init.scheme, init.weight, init.qparams.scale,
                                            init.qparams.zero_point);
}

}  // namespace nnopt
