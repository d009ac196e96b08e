// Throughput of one activation quantizer, forward + backward (rows saying
// "forward only": without autograd), on a
// [128, 16, 28, 28] tensor: nnopt's fused LSQ kernel, the LSQ reference
// formula in torch ops, PyTorch's at::_fake_quantize_learnable_per_tensor_affine,
// plain fake_quantize (no learnable step), APoT's fused operator (4-bit
// unsigned grid: 16 levels; signed: 3 magnitude bits; 8-bit unsigned: 256 levels), and relu as a floor.
// Usage: bench_qat_kernel [THREADS] [REPS] [FILTER]  (FILTER: run only rows whose
// name contains it)
#include <algorithm>
#include <cstdio>
#include <vector>
#include <string>

#include "nnopt/core/runtime.h"
#include "nnopt/quant/apot.h"
#include "nnopt/quant/fake_quant.h"
#include "nnopt/quant/lsq.h"

int main(int argc, char** argv) {
  using namespace nnopt;
  set_threads(argc > 1 ? std::stoi(argv[1]) : 2);
  const int reps = argc > 2 ? std::stoi(argv[2]) : 20;
  const std::string filter = argc > 3 ? argv[3] : "";
  torch::manual_seed(0);
  torch::Tensor x0 = torch::randn({128, 16, 28, 28}).relu();
  torch::Tensor gy = torch::randn_like(x0);
  const double g = 1.0 / std::sqrt(16 * 28 * 28 * 15.0);
  auto time = [&](const char* name, auto fn) {
    if (std::string(name).find(filter) == std::string::npos) return;
    for (int i = 0; i < 2; ++i) fn();
    std::vector<double> t(static_cast<size_t>(reps));
    for (auto& ti : t) {
      const double t0 = now_seconds();
      fn();
      ti = now_seconds() - t0;
    }
    std::sort(t.begin(), t.end());
    std::printf("%-28s %8.2f ms (median of %d)\n", name, 1e3 * t[t.size() / 2], reps);
  };
  time("relu", [&] {
    auto x = x0.clone().requires_grad_(true);
    x.relu().backward(gy);
  });
  time("fake_quantize (STE)", [&] {
    auto x = x0.clone().requires_grad_(true);
    fake_quantize_per_tensor(x, 0.1, 0, 0, 15).backward(gy);
  });
  time("lsq fused (nnopt)", [&] {
    auto x = x0.clone().requires_grad_(true);
    auto s = torch::full({1}, 0.1f).requires_grad_(true);
    lsq_quantize(x, s, {}, 0, 15, g).backward(gy);
  });
  time("apot fused u4 (nnopt)", [&] {
    auto x = x0.clone().requires_grad_(true);
    auto a = torch::full({1}, 2.0f).requires_grad_(true);
    apot_quantize(x, a, apot_levels(4), false, g).backward(gy);
  });
  time("apot fused u4, forward only", [&] {
    torch::NoGradGuard ng;
    auto a = torch::full({1}, 2.0f);
    apot_quantize(x0, a, apot_levels(4), false, g);
  });
  time("lsq fused, forward only", [&] {
    torch::NoGradGuard ng;
    auto s = torch::full({1}, 0.1f);
    lsq_quantize(x0, s, {}, 0, 15, g);
  });
  time("apot fused s4 (nnopt)", [&] {
    auto x = x0.clone().requires_grad_(true);
    auto a = torch::full({1}, 2.0f).requires_grad_(true);
    apot_quantize(x, a, apot_levels(3), true, g).backward(gy);
  });
  time("apot fused u8 (nnopt)", [&] {
    auto x = x0.clone().requires_grad_(true);
    auto a = torch::full({1}, 2.0f).requires_grad_(true);
    apot_quantize(x, a, apot_levels(8), false, g).backward(gy);
  });
  time("apot fused u8, forward only", [&] {
    torch::NoGradGuard ng;
    apot_quantize(x0, torch::full({1}, 2.0f), apot_levels(8), false, g);
  });
  time("lsq reference (torch ops)", [&] {
    auto x = x0.clone().requires_grad_(true);
    auto s = torch::full({1}, 0.1f).requires_grad_(true);
    auto sg = (s - s * g).detach() + s * g;
    auto v = (x / sg).clamp(0, 15);
    ((v.round() - v).detach() + v).mul(sg).backward(gy);
  });
  time("torch learnable fake-quant", [&] {
    auto x = x0.clone().requires_grad_(true);
    auto s = torch::full({1}, 0.1f).requires_grad_(true);
    auto z = torch::zeros({1});
    at::_fake_quantize_learnable_per_tensor_affine(x, s, z, 0, 15, g).backward(gy);
  });
  return 0;
}
