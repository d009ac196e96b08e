#pragma once
// Private to src/quant: the deterministic parallel reduction of the fused QAT
// backward loops (lsq.cpp, apot.cpp).
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

namespace nnopt::detail {

constexpr int64_t kFusedChunk = 16384;

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
