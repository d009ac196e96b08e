// APoT (Li et al., ICLR 2020): additive powers-of-two levels, RCF clip,
// weight normalization. Formulas in quant/apot.h.
#include "nnopt/quant/apot.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>
#include <vector>

#include "nnopt/core/error.h"
#include "nnopt/quant/lsq.h"

// The element loops below are the APoT QAT hot path: let GCC vectorize them fully.
// no-trapping-math lets it turn the compare-and-selects into vector min / max /
// masks (without it none of these loops vectorized); values are unchanged.
// Functions defined before the pragma (std::fabs) are not inlined into these
// loops, so they use builtins.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math")
#endif
// After the pragma, so that round_even inlines into the loops.
#include "fused_kernels.h"

namespace nnopt {

torch::Tensor apot_levels(int64_t m) {
  NNOPT_CHECK(m >= 1 && m <= 8, ValueError, "APoT: magnitude bits must be in [1, 8], got ", m);
  const int64_t n = (m + 1) / 2;
  std::vector<std::vector<double>> terms(n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = (i == n - 1 && m % 2 == 1) ? 1 : 2;
    terms[i].push_back(0.0);
    for (int64_t j = 0; j <= (int64_t{1} << k) - 2; ++j)
      terms[i].push_back(std::ldexp(1.0, -static_cast<int>(i + j * n)));
  }
  std::vector<double> sums = {0.0};
  for (const auto& t : terms) {
    std::vector<double> next;
    for (double s : sums)
      for (double p : t) next.push_back(s + p);
    sums.swap(next);
  }
  std::set<double> uniq(sums.begin(), sums.end());
  NNOPT_CHECK(static_cast<int64_t>(uniq.size()) == (int64_t{1} << m), ValueError,
              "APoT: internal error, ", uniq.size(), " distinct levels for ", m, " bits");
  const double mx = *uniq.rbegin();
  std::vector<float> v;
  for (double s : uniq) v.push_back(static_cast<float>(s / mx));
  return torch::tensor(v, torch::kFloat32);
}

namespace {

constexpr float kMinAlpha = 1e-8f;
constexpr int64_t kBlock = 256;  // values per inner pass (stack arrays)

// The normalized levels of one call and the midpoints between neighbours.
struct ApotGrid {
  std::vector<float> level, mid;
  float lo = 0;  // -1 for a signed grid, 0 otherwise
  // Grids of more than 16 levels: cell c = [c, c+1) * 2^-shift of |v| holds
  // at most one midpoint (cells are at most half the smallest gap between
  // midpoints); cell_count[c] = the number of midpoints <= c * 2^-shift, and
  // `guard` is mid followed by +inf, so that one compare finishes the count.
  std::vector<int32_t> cell_count;
  std::vector<float> guard;
  int shift = 0;
  ApotGrid(const torch::Tensor& levels, bool is_signed) : lo(is_signed ? -1.0f : 0.0f) {
    torch::Tensor l = levels.detach().to(torch::kFloat32).contiguous();
    level.assign(l.data_ptr<float>(), l.data_ptr<float>() + l.numel());
    for (size_t j = 0; j + 1 < level.size(); ++j) mid.push_back((level[j + 1] + level[j]) * 0.5f);
    if (mid.size() < 16) return;
    double gap = INFINITY;
    for (size_t j = 0; j + 1 < mid.size(); ++j) gap = std::min(gap, static_cast<double>(mid[j + 1]) - mid[j]);
    NNOPT_CHECK(gap > 0 && level.back() <= 1.0f, ValueError,
                "APoT: levels must be distinct and at most 1 (normalized)");
    while (shift < 22 && std::ldexp(1.0, -shift) > gap / 2) ++shift;
    const int64_t cells = (int64_t{1} << shift) + 1;
    cell_count.resize(static_cast<size_t>(cells));
    size_t k = 0;
    for (int64_t c = 0; c < cells; ++c) {
      const float edge = std::ldexp(static_cast<float>(c), -shift);  // exact
      while (k < mid.size() && mid[k] <= edge) ++k;
      cell_count[static_cast<size_t>(c)] = static_cast<int32_t>(k);
    }
    guard = mid;
    guard.push_back(INFINITY);
  }
  // q[i] = the nearest level to v[i] (already clipped to [lo, 1]) with
  // v[i]'s sign, n <= kBlock values: the magnitude's level index is the
  // number of midpoints <= |v| (ties go up). Small grids (<= 16 levels) by
  // counting over the midpoints, which vectorizes; larger ones by the cell
  // table (exact: |v| * 2^shift is exact in float, and so are the edges).
  void nearest(const float* __restrict v, float* __restrict q, int64_t n) const {
    if (mid.size() < 16) {
      // 16 values per vector (GCC vector extensions: one zmm, two ymm or four
      // xmm, by clone): count the midpoints <= |v| in a register, then pick
      // the level by a register shuffle instead of 16 scalar loads (the
      // loads were most of the forward's time). Integer counts: every clone
      // gives the same values.
      typedef float F16 __attribute__((vector_size(64)));
      typedef int32_t I16 __attribute__((vector_size(64)));
      F16 lv;
      for (int j = 0; j < 16; ++j) lv[j] = level[std::min<size_t>(static_cast<size_t>(j), level.size() - 1)];
      int64_t i = 0;
      for (; i + 16 <= n; i += 16) {
        I16 bits;
        std::memcpy(&bits, v + i, sizeof bits);
        bits &= 0x7fffffff;  // |v|
        F16 a;
        std::memcpy(&a, &bits, sizeof a);
        I16 k = {};
        for (const float t : mid) k -= a >= t;  // true is -1
        const F16 qv = __builtin_shuffle(lv, k);
        std::memcpy(q + i, &qv, sizeof qv);
      }
      for (; i < n; ++i) {
        int32_t k = 0;
        for (const float t : mid) k += __builtin_fabsf(v[i]) >= t ? 1 : 0;
        q[i] = level[static_cast<size_t>(k)];
      }
    } else {
      const float scale = std::ldexp(1.0f, shift);
      const int32_t* cc = cell_count.data();
      const float* g = guard.data();
      const float* lv = level.data();
      for (int64_t i = 0; i < n; ++i) {
        const float m = __builtin_fabsf(v[i]);
        int32_t k = cc[static_cast<int32_t>((m < 1.0f ? m : 1.0f) * scale)];  // nan: any cell
        k += g[k] <= m ? 1 : 0;
        q[i] = lv[k];
      }
    }
    // A nan input stays nan (then so does alpha's gradient, which training catches).
    for (int64_t i = 0; i < n; ++i) q[i] = v[i] != v[i] ? v[i] : (v[i] < 0 ? -q[i] : q[i]);
  }
};

// out[i] = a * Pi(clamp(x[i] / a, lo, 1)) for i in [begin, end). AVX-512F and AVX2
// clones beside the baseline one (no FMA, so all give the same values).
__attribute__((target_clones("avx512f", "avx2", "default"))) void apot_forward_range(
    const float* __restrict xp, float* __restrict op, int64_t begin, int64_t end, float a, const ApotGrid& grid) {
  float v[kBlock], q[kBlock];
  for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
    const int64_t n = std::min(kBlock, end - i0);
    for (int64_t i = 0; i < n; ++i) {
      const float u = xp[i0 + i] / a;
      v[i] = u < grid.lo ? grid.lo : (u > 1.0f ? 1.0f : u);
    }
    grid.nearest(v, q, n);
    for (int64_t i = 0; i < n; ++i) op[i0 + i] = q[i] * a;
  }
}

// dx[i] for i in [b0, e), and a * the sum of dy * d(out)/d(alpha) over them,
// from x and the forward's output (no second search for the nearest level):
// d(out)/d(alpha) = Pi(v) - v = (out - x) / a inside [lo, 1], out / a outside.
// Branch-free (1 outside [lo, 1]) with eight partial sums: it vectorizes.
__attribute__((target_clones("avx512f", "avx2", "default"))) double apot_backward_range(
    const float* __restrict xp, const float* __restrict yp, const float* __restrict gp, float* __restrict dp,
    int64_t b0, int64_t e, float a, float lo) {
  constexpr int kLanes = 8;
  float lane[kLanes] = {0};
  auto element = [&](int64_t i) {
    const float u = xp[i] / a;
    const float v = u < lo ? lo : (u > 1.0f ? 1.0f : u);
    const float out = v != u ? 1.0f : 0.0f, d = gp[i];
    dp[i] = (1.0f - out) * d;
    return d * (yp[i] - (1.0f - out) * xp[i]);
  };
  int64_t i = b0;
  for (; i + kLanes <= e; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lane[j] += element(i + j);
  double acc = 0;
  for (; i < e; ++i) acc += element(i);
  for (int j = 0; j < kLanes; ++j) acc += lane[j];
  return acc;
}

// x_hat = alpha * Pi(clamp(x / alpha, lo, 1)) in one pass forward and one
// backward: d/dx = 1 inside [lo, 1] (bounds included, as clamp's gradient),
// d/d alpha = Pi(v) - v inside and Pi(v) outside, v = x / alpha; alpha's
// gradient times grad_scale.
class ApotFunction : public torch::autograd::Function<ApotFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& alpha, const torch::Tensor& levels, bool is_signed,
                               double grad_scale) {
    torch::Tensor xc = detail::dense(x);
    const float a = std::max(alpha.item<float>(), kMinAlpha);
    const ApotGrid grid(levels, is_signed);
    torch::Tensor out = torch::empty_like(xc);
    const float* xp = xc.data_ptr<float>();
    float* op = out.data_ptr<float>();
    at::parallel_for(0, xc.numel(), detail::kFusedChunk, [&](int64_t begin, int64_t end) {
      apot_forward_range(xp, op, begin, end, a, grid);
    });
    ctx->save_for_backward({xc, alpha, out});
    ctx->saved_data["lo"] = static_cast<double>(grid.lo);
    ctx->saved_data["g"] = grad_scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& xc = saved[0];
    const float raw = saved[1].item<float>();
    const float a = std::max(raw, kMinAlpha);
    const float lo = static_cast<float>(ctx->saved_data["lo"].toDouble());
    torch::Tensor dy = detail::dense_as(grads[0], xc);
    torch::Tensor dx = torch::empty_like(xc);
    const float* xp = xc.data_ptr<float>();
    const float* yp = saved[2].data_ptr<float>();
    const float* gp = dy.data_ptr<float>();
    float* dp = dx.data_ptr<float>();
    const auto sums = detail::chunked_sums<1>(xc.numel(), [&](int64_t b0, int64_t e, double* sum) {
      sum[0] = apot_backward_range(xp, yp, gp, dp, b0, e, a, lo);
    });
    // alpha.clamp_min(kMinAlpha): no gradient below the floor.
    const double galpha = raw >= kMinAlpha ? sums[0] / a * ctx->saved_data["g"].toDouble() : 0.0;
    return {dx, torch::full(saved[1].sizes(), galpha, torch::kFloat32), torch::Tensor(), torch::Tensor(),
            torch::Tensor()};
  }
};

}  // namespace

torch::Tensor apot_quantize(const torch::Tensor& x, const torch::Tensor& alpha,
                            const torch::Tensor& levels, bool is_signed, double grad_scale) {
  NNOPT_CHECK(x.scalar_type() == torch::kFloat32, ValueError, "APoT: x must be float32, got ",
              x.scalar_type());
  NNOPT_CHECK(alpha.numel() == 1, ValueError, "APoT: alpha must have 1 element, got ", alpha.numel());
  NNOPT_CHECK(levels.dim() == 1 && levels.numel() >= 2, ValueError,
              "APoT: levels must be a 1-d tensor of >= 2 values, got ", levels.sizes());
  NNOPT_CHECK(std::isfinite(grad_scale) && grad_scale > 0, ValueError,
              "APoT: grad_scale must be > 0, got ", grad_scale);
  return ApotFunction::apply(x, alpha, levels, is_signed, grad_scale);
}

ApotQuantizerImpl::ApotQuantizerImpl(const QuantScheme& scheme, bool weight, bool signed_grid,
                                     double alpha, int64_t channels)
    : QatQuantizerImpl(scheme), weight_(weight), signed_(signed_grid) {
  NNOPT_CHECK(std::isfinite(alpha) && alpha > 0, ValueError, "APoT: alpha must be > 0, got ", alpha);
  alpha_ = register_parameter("alpha", torch::full({1}, alpha, torch::kFloat32));
  grid_ = register_buffer("grid", apot_levels(signed_grid ? scheme.bits() - 1 : scheme.bits()));
  NNOPT_CHECK(channels >= 1, ValueError, "APoT: channels must be >= 1, got ", channels);
  const int64_t n = weight && scheme.per_channel() ? channels : 1;
  sigma_ = register_buffer("sigma", torch::ones({n}, torch::kFloat32));
  mu_ = register_buffer("mu", torch::zeros({n}, torch::kFloat32));
}

namespace {
// Weight normalization statistics, detached: per output channel (ch_axis) for
// per-channel schemes, else over the tensor; shaped to broadcast against w.
// A block of one value has sigma 1.
std::pair<torch::Tensor, torch::Tensor> weight_moments(const torch::Tensor& w, const QuantScheme& s) {
  torch::NoGradGuard ng;
  if (!s.per_channel()) {
    torch::Tensor sigma = w.numel() > 1 ? w.std() : torch::ones({}, w.options());
    return {w.mean(), sigma.clamp_min(1e-12)};
  }
  const int64_t axis = s.ch_axis();
  NNOPT_CHECK(axis < w.dim(), ValueError, "APoT: ch_axis ", axis, " is out of range for a weight of shape ",
              w.sizes());
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < w.dim(); ++d)
    if (d != axis) dims.push_back(d);
  if (dims.empty()) return {w, torch::ones_like(w)};
  torch::Tensor mu = w.mean(dims, /*keepdim=*/true);
  torch::Tensor sigma = w.numel() / w.size(axis) > 1 ? w.std(dims, /*unbiased=*/true, /*keepdim=*/true)
                                                     : torch::ones_like(mu);
  return {mu, sigma.clamp_min(1e-12)};
}
}  // namespace

double ApotQuantizerImpl::alpha_grad_scale(const torch::Tensor& x) const {
  return lsq_grad_scale(x, weight_, static_cast<double>(grid_.numel() - 1));  // Q_P: the positive levels
}

torch::Tensor ApotQuantizerImpl::forward(const torch::Tensor& x) {
  if (!weight_) return apot_quantize(x, alpha_, grid_, signed_, alpha_grad_scale(x));
  auto [mu, sigma] = weight_moments(x, scheme_);
  {
    torch::NoGradGuard ng;
    const int64_t n = mu.numel();
    NNOPT_CHECK(mu_.numel() == n, ValueError, "APoT: ", mu_.numel(),
                " per-channel statistics do not fit a weight of shape ", x.sizes());
    mu_.copy_(mu.reshape({n}));
    sigma_.copy_(sigma.reshape({n}));
  }
  return apot_quantize((x - mu) / sigma, alpha_, grid_, signed_, alpha_grad_scale(x)) * sigma + mu;
}

std::string ApotQuantizerImpl::describe() const {
  return std::string("apot(") + scheme_.describe() + (signed_ ? ", signed grid)" : ")");
}

torch::Tensor ApotQuantizerImpl::levels(int64_t channel) const {
  const int64_t n = weight_ ? channels() : 1;
  NNOPT_CHECK(channel >= 0 && channel < n, ValueError, "APoT: channel ", channel, " out of range [0, ", n, ")");
  torch::Tensor g = grid_;
  if (signed_) g = torch::cat({-grid_.slice(0, 1).flip(0), grid_});
  torch::Tensor a = alpha_.detach().clamp_min(1e-8);
  return weight_ ? g * a * sigma_[channel] + mu_[channel] : g * a;
}

QatQuantizerPtr make_apot_quantizer(const QuantizerInit& init) {
  const QuantScheme& s = init.scheme;
  if (init.weight) {
    NNOPT_CHECK(init.value.defined(), ValueError, "APoT: a weight quantizer needs the weight");
    torch::NoGradGuard ng;
    torch::Tensor w = init.value.detach().to(torch::kFloat32);
    auto [mu, sigma] = weight_moments(w, s);
    torch::Tensor wn = (w - mu) / sigma;
    torch::Tensor grid = apot_levels(s.bits() - 1);
    const double mx = std::max(wn.abs().max().item<double>(), 1e-6);
    double best_alpha = mx, best_err = INFINITY;
    for (int k = 1; k <= 100; ++k) {
      const double a = mx * k / 100.0;
      const double err =
          (apot_quantize(wn, torch::full({1}, a, torch::kFloat32), grid, true) - wn)
              .square()
              .mean()
              .item<double>();
      if (err < best_err) {
        best_err = err;
        best_alpha = a;
      }
    }
    return std::make_shared<ApotQuantizerImpl>(s, true, true, best_alpha,
                                               s.per_channel() ? w.size(s.ch_axis()) : 1);
  }
  const double scale = init.qparams.scale.item<double>();
  const int64_t z = init.qparams.zero_point.item<int64_t>();
  const bool negatives = s.is_signed() || z > s.quant_min();
  const double up = scale * static_cast<double>(s.quant_max() - z);
  const double down = scale * static_cast<double>(z - s.quant_min());
  const double alpha = negatives ? std::max(up, down) : up;
  return std::make_shared<ApotQuantizerImpl>(s, false, negatives, alpha);
}

}  // namespace nnopt
