#pragma once
// Private to src/quant: helpers of the fused, vectorized quantize loops
// (lsq.cpp, apot.cpp, fake_quant_kernel.cpp). Include it after the file's
// `#pragma GCC optimize`: a function defined before the pragma is not inlined
// into the loops after it.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace nnopt::detail {

constexpr int64_t kFusedChunk = 16384;

// Round half to even without a libm call, so the loops vectorize: adding and
// subtracting 1.5 * 2^23 rounds any |v| < 2^22 to an integer in the default
// rounding mode (callers clamp v to a small integer range first). Equals
// std::nearbyint there.
inline float round_even(float v) {
  constexpr float kMagic = 12582912.0f;
  return (v + kMagic) - kMagic;
}

/// x's elements for one linear pass: x itself when it is dense in its
/// suggested memory format (NCHW or channels-last; a channels-last activation
/// is not copied to NCHW and back), else a copy in that format. Elementwise
/// loops are indifferent to the order.
inline torch::Tensor dense(const torch::Tensor& x) { return x.contiguous(x.suggest_memory_format()); }
/// t (the shape of `like`, a dense() result) in like's layout, so that linear
/// position i is the same element in both (gradients against saved inputs).
inline torch::Tensor dense_as(const torch::Tensor& t, const torch::Tensor& like) {
  return t.contiguous(like.suggest_memory_format());
}

/// at::fake_quantize_per_tensor_affine(x, scale, zero_point, quant_min,
/// quant_max) bitwise, values and STE gradient, in one vectorized pass each
/// way (fake_quant_kernel.cpp). x: float32, dense (NCHW or channels-last;
/// the output has x's layout).
torch::Tensor fused_fake_quantize_per_tensor(const torch::Tensor& x, double scale,
                                             int64_t zero_point, int64_t quant_min,
                                             int64_t quant_max);

/// Calls body(begin, end, sums) on the fixed chunks [c * kFusedChunk, ...) of
/// [0, n) in parallel; body writes the chunk's K sums. The chunks' sums are
/// added in chunk order, so the totals do not depend on the thread count.
template <size_t K, class Body>
std::array<double, K> chunked_sums(int64_t n, const Body& body) {
  const int64_t nchunks = std::max<int64_t>(1, (n + kFusedChunk - 1) / kFusedChunk);
  std::vector<std::array<double, K>> part(nchunks);
  at::parallel_for(0, nchunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      part[c].fill(0.0);
      body(c * kFusedChunk, std::min(n, (c + 1) * kFusedChunk), part[c].data());
    }
  });
  std::array<double, K> total{};
  for (const auto& p : part)
    for (size_t k = 0; k < K; ++k) total[k] += p[k];
  return total;
}

}  // namespace nnopt::detail
