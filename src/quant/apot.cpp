// APoT (Li et al., ICLR 2020): additive powers-of-two levels, RCF clip,
// weight normalization. Formulas in quant/apot.h.
#include "nnopt/quant/apot.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
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
  // Grids of <= 16 levels: the levels padded to 16 (with the last) and the
  // midpoints padded to 16 with +inf, for the register search.
  std::array<float, 16> level16{}, mid16{};
  bool small() const { return mid.size() < 16; }
  ApotGrid(const torch::Tensor& levels, bool is_signed) : lo(is_signed ? -1.0f : 0.0f) {
    torch::Tensor l = levels.detach().to(torch::kFloat32).contiguous();
    level.assign(l.data_ptr<float>(), l.data_ptr<float>() + l.numel());
    for (size_t j = 0; j + 1 < level.size(); ++j) mid.push_back((level[j + 1] + level[j]) * 0.5f);
    if (small()) {
      for (size_t j = 0; j < 16; ++j) {
        level16[j] = level[std::min(j, level.size() - 1)];
        mid16[j] = j < mid.size() ? mid[j] : INFINITY;
      }
      return;
    }
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
  // v[i]'s sign bit, n <= kBlock values: the magnitude's level index is the
  // number of midpoints <= |v| (ties go up). Small grids (<= 16 levels) by
  // counting over the midpoints (here only for what the register kernels
  // leave, or on CPUs without AVX2); larger ones by the cell table (exact:
  // |v| * 2^shift is exact in float, and so are the edges).
  void nearest(const float* __restrict v, float* __restrict q, int64_t n) const {
    if (small()) {
      for (int64_t i = 0; i < n; ++i) {
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
    // A nan input stays nan (then so does alpha's gradient, which training
    // catches). The sign is v's sign bit, as the register kernels set it.
    for (int64_t i = 0; i < n; ++i) q[i] = v[i] != v[i] ? v[i] : __builtin_copysignf(q[i], v[i]);
  }
};

// Grids of <= 16 levels, in registers (AVX-512: 16 values per step, AVX2: 8),
// from x[i] to out[i] in one pass: v = clamp(x / a, lo, 1) by max/min, the
// level index k = the number of midpoints <= |v| by a 4-step branch-free
// binary search over the 16 midpoint slots (15 midpoints and +inf): the first
// three steps compare against blends of broadcast midpoints, the last against
// a register permute; the level by one more permute, the sign bit copied
// from v, and q - (v - v) turns q into nan where v is nan. Integer indices and
// the same float operations as the block path (no FMA): every kernel gives
// the same bits. Each returns where it stopped (the last partial vector is
// left to the block path). Permutes by k were the cost before: the search
// did 4 (and a count over all 15 midpoints before that, 16 compares).
// GCC 12 warns inside the AVX-512 intrinsics' headers (their
// _mm512_undefined_ps() placeholders) under the O3 pragma; nothing is read
// uninitialized here.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
template <bool Code>
__attribute__((target("avx512f"))) int64_t apot_small_avx512(const float* __restrict xp, float* __restrict op,
                                                             float* __restrict cp, int64_t i, int64_t end, float a,
                                                             const ApotGrid& g) {
  const float* md = g.mid16.data();
  const __m512 mid = _mm512_loadu_ps(md), lv = _mm512_loadu_ps(g.level16.data());
  const __m512 b1 = _mm512_set1_ps(md[1]), b3 = _mm512_set1_ps(md[3]), b5 = _mm512_set1_ps(md[5]),
               b7 = _mm512_set1_ps(md[7]), b9 = _mm512_set1_ps(md[9]), b11 = _mm512_set1_ps(md[11]),
               b13 = _mm512_set1_ps(md[13]);
  const __m512 av = _mm512_set1_ps(a), lov = _mm512_set1_ps(g.lo), one = _mm512_set1_ps(1.0f);
  const __m512i c8 = _mm512_set1_epi32(8), c4 = _mm512_set1_epi32(4), c2 = _mm512_set1_epi32(2),
                c1 = _mm512_set1_epi32(1), abs_mask = _mm512_set1_epi32(0x7fffffff),
                sign_mask = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u)),
                two = _mm512_castps_si512(_mm512_set1_ps(2.0f));
  for (; i + 16 <= end; i += 16) {
    // max(lo, u): u where u is nan; min(1, .) likewise.
    const __m512 u = _mm512_div_ps(_mm512_loadu_ps(xp + i), av);
    const __m512 v = _mm512_min_ps(one, _mm512_max_ps(lov, u));
    const __m512i vb = _mm512_castps_si512(v);
    const __m512 m = _mm512_castsi512_ps(_mm512_and_si512(vb, abs_mask));
    const __mmask16 k1 = _mm512_cmp_ps_mask(m, b7, _CMP_GE_OQ);
    const __mmask16 k2 = _mm512_cmp_ps_mask(m, _mm512_mask_blend_ps(k1, b3, b11), _CMP_GE_OQ);
    const __m512 t3 = _mm512_mask_blend_ps(k2, _mm512_mask_blend_ps(k1, b1, b9), _mm512_mask_blend_ps(k1, b5, b13));
    const __mmask16 k3 = _mm512_cmp_ps_mask(m, t3, _CMP_GE_OQ);
    __m512i k = _mm512_maskz_mov_epi32(k1, c8);
    k = _mm512_mask_add_epi32(k, k2, k, c4);
    k = _mm512_mask_add_epi32(k, k3, k, c2);
    k = _mm512_mask_add_epi32(k, _mm512_cmp_ps_mask(m, _mm512_permutexvar_ps(k, mid), _CMP_GE_OQ), k, c1);
    const __m512i sign = _mm512_and_si512(vb, sign_mask);
    __m512 q = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_permutexvar_ps(k, lv)), sign));
    q = _mm512_sub_ps(q, _mm512_sub_ps(v, v));
    _mm512_storeu_ps(op + i, _mm512_mul_ps(q, av));
    if (Code) {
      const __mmask16 inside = _mm512_cmp_ps_mask(u, v, _CMP_EQ_OQ);
      const __m512 outside = _mm512_add_ps(q, _mm512_castsi512_ps(_mm512_or_si512(two, sign)));
      _mm512_storeu_ps(cp + i, _mm512_mask_sub_ps(outside, inside, q, v));
    }
  }
  return i;
}
#pragma GCC diagnostic pop

template <bool Code>
__attribute__((target("avx2"))) int64_t apot_small_avx2(const float* __restrict xp, float* __restrict op,
                                                        float* __restrict cp, int64_t i, int64_t end, float a,
                                                        const ApotGrid& g) {
  const float* md = g.mid16.data();
  const float* lp = g.level16.data();
  // even[j] = mid[2j]: the last step's candidates, by k / 2.
  const __m256 even = _mm256_setr_ps(md[0], md[2], md[4], md[6], md[8], md[10], md[12], md[14]);
  const __m256 l0 = _mm256_loadu_ps(lp), l1 = _mm256_loadu_ps(lp + 8);
  const __m256 b1 = _mm256_set1_ps(md[1]), b3 = _mm256_set1_ps(md[3]), b5 = _mm256_set1_ps(md[5]),
               b7 = _mm256_set1_ps(md[7]), b9 = _mm256_set1_ps(md[9]), b11 = _mm256_set1_ps(md[11]),
               b13 = _mm256_set1_ps(md[13]);
  const __m256 av = _mm256_set1_ps(a), lov = _mm256_set1_ps(g.lo), one = _mm256_set1_ps(1.0f);
  const __m256i c4 = _mm256_set1_epi32(4), c2 = _mm256_set1_epi32(2), c1 = _mm256_set1_epi32(1),
                abs_mask = _mm256_set1_epi32(0x7fffffff),
                sign_mask = _mm256_set1_epi32(static_cast<int32_t>(0x80000000u)),
                two = _mm256_castps_si256(_mm256_set1_ps(2.0f));
  for (; i + 8 <= end; i += 8) {
    const __m256 u = _mm256_div_ps(_mm256_loadu_ps(xp + i), av);
    const __m256 v = _mm256_min_ps(one, _mm256_max_ps(lov, u));
    const __m256i vb = _mm256_castps_si256(v);
    const __m256 m = _mm256_castsi256_ps(_mm256_and_si256(vb, abs_mask));
    const __m256 k1 = _mm256_cmp_ps(m, b7, _CMP_GE_OQ);  // all ones where true
    const __m256 k2 = _mm256_cmp_ps(m, _mm256_blendv_ps(b3, b11, k1), _CMP_GE_OQ);
    const __m256 t3 = _mm256_blendv_ps(_mm256_blendv_ps(b1, b9, k1), _mm256_blendv_ps(b5, b13, k1), k2);
    const __m256 k3 = _mm256_cmp_ps(m, t3, _CMP_GE_OQ);
    const __m256i h = _mm256_or_si256(
        _mm256_or_si256(_mm256_and_si256(_mm256_castps_si256(k1), c4), _mm256_and_si256(_mm256_castps_si256(k2), c2)),
        _mm256_and_si256(_mm256_castps_si256(k3), c1));  // k / 2
    const __m256 k4 = _mm256_cmp_ps(m, _mm256_permutevar8x32_ps(even, h), _CMP_GE_OQ);
    const __m256i k = _mm256_add_epi32(_mm256_slli_epi32(h, 1), _mm256_and_si256(_mm256_castps_si256(k4), c1));
    // Level k of 16: permutes read k mod 8; k >= 8 exactly where k1.
    __m256 q = _mm256_blendv_ps(_mm256_permutevar8x32_ps(l0, k), _mm256_permutevar8x32_ps(l1, k), k1);
    const __m256i sign = _mm256_and_si256(vb, sign_mask);
    q = _mm256_castsi256_ps(_mm256_or_si256(_mm256_castps_si256(q), sign));
    q = _mm256_sub_ps(q, _mm256_sub_ps(v, v));
    _mm256_storeu_ps(op + i, _mm256_mul_ps(q, av));
    if (Code) {
      const __m256 outside = _mm256_add_ps(q, _mm256_castsi256_ps(_mm256_or_si256(two, sign)));
      _mm256_storeu_ps(cp + i, _mm256_blendv_ps(outside, _mm256_sub_ps(q, v), _mm256_cmp_ps(u, v, _CMP_EQ_OQ)));
    }
  }
  return i;
}

}  // namespace

namespace detail {
ApotKernel apot_best_kernel() {
  static const ApotKernel best = __builtin_cpu_supports("avx512f") ? ApotKernel::kAvx512
                                 : __builtin_cpu_supports("avx2")  ? ApotKernel::kAvx2
                                                                   : ApotKernel::kBlock;
  return best;
}
}  // namespace detail

namespace {

// out[i] = a * Pi(clamp(x[i] / a, lo, 1)) for i in [begin, end), and with cp
// the backward's code c[i] (below): small grids by the register kernel
// `kernel`, the rest by 256-value blocks. The block loops have AVX-512F and
// AVX2 clones beside the baseline one (no FMA, so all give the same values).
//
// The code: c = Pi(v) - v inside [lo, 1] (|c| <= 1/2, half a gap of the
// normalized grid), Pi(v) + copysign(2, Pi(v)) outside (|c| >= 2; nan where x
// is nan). It is all the backward needs: d/dx = [|c| < 1], d/d alpha = c
// inside and c - copysign(2, c) outside. Storing it costs the forward one
// more write; the backward then reads c and dy instead of x, the output and
// dy, and repeats no division (APoT's backward had been the slowest part of
// its step after the forward).
__attribute__((target_clones("avx512f", "avx2", "default"))) void apot_forward_range(
    const float* __restrict xp, float* __restrict op, float* __restrict cp, int64_t begin, int64_t end, float a,
    const ApotGrid& grid, detail::ApotKernel kernel) {
  int64_t i0 = begin;
  if (grid.small() && kernel == detail::ApotKernel::kAvx512)
    i0 = cp ? apot_small_avx512<true>(xp, op, cp, i0, end, a, grid)
            : apot_small_avx512<false>(xp, op, cp, i0, end, a, grid);
  if (grid.small() && kernel == detail::ApotKernel::kAvx2)
    i0 = cp ? apot_small_avx2<true>(xp, op, cp, i0, end, a, grid) : apot_small_avx2<false>(xp, op, cp, i0, end, a, grid);
  float u[kBlock], v[kBlock], q[kBlock];
  for (; i0 < end; i0 += kBlock) {
    const int64_t n = std::min(kBlock, end - i0);
    for (int64_t i = 0; i < n; ++i) {
      u[i] = xp[i0 + i] / a;
      v[i] = u[i] < grid.lo ? grid.lo : (u[i] > 1.0f ? 1.0f : u[i]);
    }
    grid.nearest(v, q, n);
    for (int64_t i = 0; i < n; ++i) op[i0 + i] = q[i] * a;
    if (cp)
      for (int64_t i = 0; i < n; ++i)
        cp[i0 + i] = u[i] == v[i] ? q[i] - v[i] : q[i] + __builtin_copysignf(2.0f, q[i]);
  }
}

// dx[i] for i in [b0, e), and the sum of dy * d(out)/d(alpha) / alpha over
// them, from the forward's code (above): eight partial sums (lane j adds
// elements b0 + j, b0 + 8 + j, ... of the whole groups of 8, in order), the
// tail summed after them. The AVX2 kernel does exactly the scalar loop's
// operations, 8 lanes at a time, and leaves the tail to it (GCC's own
// vectorization of the scalar loop shuffled more than it computed).
double apot_backward_scalar(const float* __restrict cp, const float* __restrict gp, float* __restrict dp,
                            int64_t b0, int64_t e) {
  float lane[8] = {0};
  const int64_t body = b0 + (e - b0) / 8 * 8;
  double tail = 0;
  for (int64_t i = b0; i < e; ++i) {
    const float c = cp[i], d = gp[i];
    const float out = __builtin_fabsf(c) < 1.0f ? 0.0f : 1.0f;  // nan: outside
    dp[i] = (1.0f - out) * d;
    const float t = d * (c - out * __builtin_copysignf(2.0f, c));
    if (i < body)
      lane[(i - b0) % 8] += t;
    else
      tail += t;
  }
  for (int j = 0; j < 8; ++j) tail += lane[j];
  return tail;
}

__attribute__((target("avx2"))) double apot_backward_avx2(const float* __restrict cp, const float* __restrict gp,
                                                          float* __restrict dp, int64_t b0, int64_t e) {
  const __m256 one = _mm256_set1_ps(1.0f), two = _mm256_set1_ps(2.0f);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(0x80000000u)));
  __m256 lanes = _mm256_setzero_ps();
  int64_t i = b0;
  for (; i + 8 <= e; i += 8) {
    const __m256 c = _mm256_loadu_ps(cp + i), d = _mm256_loadu_ps(gp + i);
    const __m256 inside = _mm256_cmp_ps(_mm256_and_ps(c, abs_mask), one, _CMP_LT_OQ);
    const __m256 out = _mm256_andnot_ps(inside, one);  // 1 outside (and for nan), else 0
    _mm256_storeu_ps(dp + i, _mm256_mul_ps(_mm256_sub_ps(one, out), d));
    const __m256 sign2 = _mm256_or_ps(_mm256_and_ps(c, sign_mask), two);
    lanes = _mm256_add_ps(lanes, _mm256_mul_ps(d, _mm256_sub_ps(c, _mm256_mul_ps(out, sign2))));
  }
  float lane[8];
  _mm256_storeu_ps(lane, lanes);
  double acc = apot_backward_scalar(cp, gp, dp, i, e);  // < 8 values: all tail
  for (int j = 0; j < 8; ++j) acc += lane[j];
  return acc;
}

double apot_backward_range(const float* __restrict cp, const float* __restrict gp, float* __restrict dp,
                           int64_t b0, int64_t e) {
  return detail::apot_best_kernel() == detail::ApotKernel::kBlock ? apot_backward_scalar(cp, gp, dp, b0, e)
                                                                  : apot_backward_avx2(cp, gp, dp, b0, e);
}

// The forward's values for a dense x (detail::dense), in x's layout; with
// `code` defined (empty_like(xc)) also the backward's code.
torch::Tensor forward_values(const torch::Tensor& xc, float a, const ApotGrid& grid, detail::ApotKernel kernel,
                             const torch::Tensor& code = {}) {
  torch::Tensor out = torch::empty_like(xc);
  const float* xp = xc.data_ptr<float>();
  float* op = out.data_ptr<float>();
  float* cp = code.defined() ? code.data_ptr<float>() : nullptr;
  at::parallel_for(0, xc.numel(), detail::kFusedChunk, [&](int64_t begin, int64_t end) {
    apot_forward_range(xp, op, cp, begin, end, a, grid, kernel);
  });
  return out;
}

// x_hat = alpha * Pi(clamp(x / alpha, lo, 1)) in one pass forward and one
// backward: d/dx = 1 inside [lo, 1] (bounds included, as clamp's gradient),
// d/d alpha = Pi(v) - v inside and Pi(v) outside, v = x / alpha; alpha's
// gradient times grad_scale. The code for the backward is kept only when a
// gradient is wanted (`need_code`, decided outside: in here grad mode is off).
class ApotFunction : public torch::autograd::Function<ApotFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& alpha, const torch::Tensor& levels, bool is_signed,
                               double grad_scale, bool need_code) {
    torch::Tensor xc = detail::dense(x);
    const float a = std::max(alpha.item<float>(), kMinAlpha);
    const ApotGrid grid(levels, is_signed);
    torch::Tensor code = need_code ? torch::empty_like(xc) : torch::Tensor();
    torch::Tensor out = forward_values(xc, a, grid, detail::apot_best_kernel(), code);
    if (need_code) ctx->save_for_backward({code, alpha});
    ctx->saved_data["g"] = grad_scale;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& code = saved[0];
    const float raw = saved[1].item<float>();
    torch::Tensor dy = detail::dense_as(grads[0], code);
    torch::Tensor dx = torch::empty_like(code);
    const float* cp = code.data_ptr<float>();
    const float* gp = dy.data_ptr<float>();
    float* dp = dx.data_ptr<float>();
    const auto sums = detail::chunked_sums<1>(code.numel(), [&](int64_t b0, int64_t e, double* sum) {
      sum[0] = apot_backward_range(cp, gp, dp, b0, e);
    });
    // alpha.clamp_min(kMinAlpha): no gradient below the floor.
    const double galpha = raw >= kMinAlpha ? sums[0] * ctx->saved_data["g"].toDouble() : 0.0;
    return {dx, torch::full(saved[1].sizes(), galpha, torch::kFloat32), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor()};
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
  const bool need_code = torch::GradMode::is_enabled() && (x.requires_grad() || alpha.requires_grad());
  return ApotFunction::apply(x, alpha, levels, is_signed, grad_scale, need_code);
}

namespace detail {
torch::Tensor apot_forward_with(const torch::Tensor& x, double alpha, const torch::Tensor& levels,
                                bool is_signed, ApotKernel kernel) {
  NNOPT_CHECK(x.scalar_type() == torch::kFloat32, ValueError, "APoT: x must be float32, got ", x.scalar_type());
  NNOPT_CHECK(kernel == ApotKernel::kBlock || (kernel == ApotKernel::kAvx2 && __builtin_cpu_supports("avx2")) ||
                  (kernel == ApotKernel::kAvx512 && __builtin_cpu_supports("avx512f")),
              ValueError, "APoT: this CPU cannot run the requested kernel");
  torch::NoGradGuard ng;
  return forward_values(dense(x), std::max(static_cast<float>(alpha), kMinAlpha), ApotGrid(levels, is_signed),
                        kernel);
}
}  // namespace detail

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
  const std::vector<int64_t> dims = dims_except(w.dim(), axis);
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
