// KlObserver: entropy (KL-divergence) calibration of TensorRT.
//
// Reference: Szymon Migacz, "8-bit Inference with TensorRT", NVIDIA GTC 2017
// (slides "Entropy Calibration - pseudocode"); the same procedure is used by
// ncnn (ncnn2table) and MXNet (_get_optimal_threshold).
//
// Algorithm (B = options.bins, default 2048; L = number of quantization
// levels available for [0, t]: 2^(bits-1) for signed or symmetric schemes, as
// TensorRT's 128 for int8, and 2^bits for unsigned affine ones):
//   1. Histogram H of |x| with B bins over [0, max|x|]; bin width w = max|x| / B.
//   2. For each candidate i = max(L, 128) .. B (keep bins 0..i-1, clip the rest):
//        P = H[0..i-1] with the clipped mass sum(H[i..B-1]) added to P[i-1]
//            (the reference distribution: clipping moves outliers to the edge);
//        Q = H[0..i-1] merged into L groups of i / L consecutive bins (the last
//            group takes the remainder), each group's count then spread evenly
//            over the bins of the group where P is non-zero (bins with P = 0
//            stay 0): the distribution after quantizing to L levels;
//        normalize P and Q to sum 1; KL(P || Q) = sum_{P>0} P log(P / Q), with
//        Q floored at 1e-10 where P > 0 and Q = 0 (TensorRT leaves this case
//        open; MXNet smooths by a similar small epsilon). A Q with no mass
//        (all data beyond the candidate) is skipped.
//   Two details follow NVIDIA's entropy calibrator (pytorch-quantization,
//   calib/histogram.py, TensorRT's Python tooling): the count of bin 0 is
//   replaced by that of bin 1 before the search (after a ReLU, half the
//   values can be exactly 0, and that spike, smeared over the first group of
//   Q, otherwise favours the smallest candidates, where it is a group of its
//   own), and the candidates start at bin 128 or L, whichever is larger
//   (TensorRT's int8 start, also below 8 bits). Without them u4 activations
//   after a ReLU got thresholds ~1 % of their range and resnet20 W4A4 fell to
//   chance (session 14).
//   3. m = the i with the least divergence (the first on ties);
//      threshold t = (m + 0.5) * w, capped at max|x|.
// The histogram is built from the kept samples (see SampleObserver) with
// max|x| taken from the exact observed min / max.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "nnopt/core/error.h"
#include "nnopt/quant/observer.h"

namespace nnopt {

namespace {
constexpr int64_t kStartBin = 128;  // TensorRT's first candidate (int8: 128 levels)

int64_t kl_levels(const QuantScheme& s) {
  return (s.is_signed() || s.symmetric()) ? (int64_t{1} << (s.bits() - 1))
                                           : (int64_t{1} << s.bits());
}
}  // namespace

KlObserver::KlObserver(const QuantScheme& scheme, const ObserverOptions& options)
    : SampleObserver(scheme, options) {
  require_per_tensor();
  NNOPT_CHECK(options_.bins() >= kl_levels(scheme_), ValueError, "observer 'kl': bins (",
              options_.bins(), ") must be >= the number of levels (", kl_levels(scheme_),
              ") for ", scheme_.describe());
}

double KlObserver::threshold() const {
  torch::NoGradGuard ng;
  auto s = samples().abs().contiguous();
  const double amax = std::max(std::abs(data_min()), std::abs(data_max()));
  if (amax == 0) return 0;
  const int64_t B = options_.bins(), L = kl_levels(scheme_);
  const double w = amax / static_cast<double>(B);
  std::vector<double> h(B, 0.0);
  const float* p = s.data_ptr<float>();
  for (int64_t k = 0; k < s.numel(); ++k) {
    int64_t b = static_cast<int64_t>(static_cast<double>(p[k]) / w);
    h[std::min(std::max<int64_t>(b, 0), B - 1)] += 1;
  }
  if (B > 1) h[0] = h[1];  // the spike at 0 (see the top of the file)
  // suffix[i] = sum(h[i..B-1]): the mass clipped by candidate i.
  std::vector<double> suffix(B + 1, 0.0);
  for (int64_t b = B - 1; b >= 0; --b) suffix[b] = suffix[b + 1] + h[b];

  double best = std::numeric_limits<double>::infinity();
  int64_t best_i = B;
  std::vector<double> P(B), Q(B);
  const int64_t start = std::max(L, std::min<int64_t>(kStartBin, B));
  for (int64_t i = start; i <= B; ++i) {
    for (int64_t b = 0; b < i; ++b) P[b] = h[b];
    P[i - 1] += suffix[i];
    const int64_t per = i / L;
    double qsum = 0;
    for (int64_t j = 0; j < L; ++j) {
      const int64_t b0 = j * per, b1 = (j == L - 1) ? i : b0 + per;
      double mass = 0;
      int64_t nonzero = 0;
      for (int64_t b = b0; b < b1; ++b) {
        mass += h[b];
        nonzero += P[b] != 0;
      }
      for (int64_t b = b0; b < b1; ++b)
        Q[b] = (P[b] != 0 && nonzero > 0) ? mass / static_cast<double>(nonzero) : 0.0;
      qsum += mass;
    }
    if (qsum <= 0) continue;
    double psum = 0;
    for (int64_t b = 0; b < i; ++b) psum += P[b];
    double kl = 0;
    for (int64_t b = 0; b < i; ++b) {
      if (P[b] == 0) continue;
      const double pp = P[b] / psum;
      const double qq = std::max(Q[b] / qsum, 1e-10);
      kl += pp * std::log(pp / qq);
    }
    if (kl < best) {
      best = kl;
      best_i = i;
    }
  }
  return std::min((static_cast<double>(best_i) + 0.5) * w, amax);
}

std::pair<torch::Tensor, torch::Tensor> KlObserver::range() const {
  const double t = threshold();
  return clip_range(-t, t);
}

}  // namespace nnopt
