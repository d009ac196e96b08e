// Tests for quantization-aware training: the learnable quantizers (LSQ, LSQ+,
// PACT, DoReFa, APoT) against their reference formulas, their grids, the
// gradients of their learnable parameters, run_qat on a tiny synthetic task,
// conversion back to FakeQuant and integer lowering, and the error messages.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/int8.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/quant/apot.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/dorefa.h"
#include "nnopt/quant/lsq.h"
#include "nnopt/quant/lsq_plus.h"
#include "nnopt/quant/pact.h"
#include "nnopt/quant/ptq.h"
#include "nnopt/quant/qat.h"
#include "nnopt/train/trainer.h"
#include "test_util.h"

namespace nnopt {
namespace {

// ---------------------------------------------------------------- LSQ gradient

// The LSQ paper's formula written with torch ops (grad_scale and round_pass as
// in Esser et al., Appendix), with an optional LSQ+ offset.
torch::Tensor lsq_reference(const torch::Tensor& x, const torch::Tensor& s, const torch::Tensor& b,
                            double lo, double hi, double g) {
  torch::Tensor sg = (s - s * g).detach() + s * g;
  torch::Tensor bg = b.defined() ? (b - b * g).detach() + b * g : torch::zeros({1});
  torch::Tensor v = ((x - bg) / sg).clamp(lo, hi);
  torch::Tensor vbar = (v.round() - v).detach() + v;
  return vbar * sg + bg;
}

TEST(QatLsq, GradientMatchesAutogradOfReference) {
  torch::manual_seed(0);
  const double lo = -8, hi = 7;  // s4
  torch::Tensor x0 = torch::randn({16, 8, 5, 5}) * 0.6;  // a good share beyond 0.7 = 7 * step
  torch::Tensor w = torch::randn({16, 8, 5, 5});          // upstream gradient
  const double g = 1.0 / std::sqrt(8 * 5 * 5 * hi);
  for (bool with_offset : {false, true}) {
    torch::Tensor x1 = x0.clone().requires_grad_(true), x2 = x0.clone().requires_grad_(true);
    torch::Tensor s1 = torch::full({1}, 0.1f).requires_grad_(true);
    torch::Tensor s2 = torch::full({1}, 0.1f).requires_grad_(true);
    torch::Tensor b1, b2;
    if (with_offset) {
      b1 = torch::full({1}, -0.05f).requires_grad_(true);
      b2 = torch::full({1}, -0.05f).requires_grad_(true);
    }
    torch::Tensor y1 = lsq_quantize(x1, s1, b1, lo, hi, g);
    torch::Tensor y2 = lsq_reference(x2, s2, b2, lo, hi, g);
    EXPECT_TRUE(torch::allclose(y1, y2, 0, 1e-6)) << (y1 - y2).abs().max().item<float>();
    (y1 * w).sum().backward();
    (y2 * w).sum().backward();
    // Reference: d/dx of (x / s) * s is 1 up to float rounding; same mask.
    EXPECT_TRUE(torch::allclose(x1.grad(), x2.grad(), 1e-6, 1e-6));
    EXPECT_TRUE(torch::equal(x1.grad().ne(0), x2.grad().ne(0)));
    EXPECT_NEAR(s1.grad().item<double>(), s2.grad().item<double>(),
                1e-4 * std::abs(s2.grad().item<double>()) + 1e-6);
    EXPECT_NE(s1.grad().item<double>(), 0.0);
    if (with_offset) {
      EXPECT_NEAR(b1.grad().item<double>(), b2.grad().item<double>(),
                  1e-4 * std::abs(b2.grad().item<double>()) + 1e-6);
      EXPECT_NE(b1.grad().item<double>(), 0.0);
    }
  }
}

TEST(QatLsq, ModuleUsesPaperGradScaleAndEqualsFakeQuant) {
  torch::manual_seed(1);
  // Activation (u4, zero point 0): g = 1 / sqrt(features per sample * Q_P).
  QuantScheme a = QuantScheme(4).is_signed(false).symmetric(false);
  LsqQuantizerImpl q(a, false, torch::full({1}, 0.2f), torch::zeros({1}, torch::kInt64));
  torch::Tensor x = torch::randn({4, 3, 6, 6}).abs().requires_grad_(true);
  torch::Tensor y = q.forward(x);
  y.sum().backward();
  torch::Tensor s = torch::full({1}, 0.2f).requires_grad_(true);
  lsq_reference(x.detach(), s, {}, 0, 15, 1.0 / std::sqrt(3 * 6 * 6 * 15.0)).sum().backward();
  EXPECT_NEAR(q.step().grad().item<double>(), s.grad().item<double>(), 1e-5);
  // Same values as FakeQuant with scale = step (bit for bit).
  auto fq = q.to_fake_quant();
  EXPECT_TRUE(torch::equal(y.detach(), fq->forward(x.detach())));

  // Per-channel weights (s4): each channel's step gets its own gradient.
  QuantScheme ws = QuantScheme(4).per_channel(true);
  torch::Tensor steps = torch::tensor({0.05f, 0.1f, 0.2f});
  LsqQuantizerImpl wq(ws, true, steps, torch::zeros({3}, torch::kInt64));
  torch::Tensor wt = torch::randn({3, 2, 3, 3}) * 0.5;
  torch::Tensor wy = wq.forward(wt);
  wy.sum().backward();
  for (int64_t c = 0; c < 3; ++c) {
    torch::Tensor sc = steps[c].reshape({1}).clone().requires_grad_(true);
    lsq_reference(wt[c], sc, {}, -8, 7, 1.0 / std::sqrt(18 * 7.0)).sum().backward();
    EXPECT_NEAR(wq.step().grad()[c].item<double>(), sc.grad().item<double>(), 1e-5) << c;
  }
  EXPECT_TRUE(torch::allclose(wy.detach(), wq.to_fake_quant()->forward(wt), 0, 1e-7));
}

// The fused per-channel operator (channel axis 0) gives FakeQuant's values
// exactly, and the torch-ops formula's values and gradients up to float
// rounding; the
// torch-ops path serves other axes, so the same weights with axis 1 are the
// reference. One step is negative, several channels per parallel chunk.
TEST(QatLsq, FusedPerChannelEqualsTorchOpsFormula) {
  torch::manual_seed(5);
  const int64_t c = 48;
  torch::Tensor w = torch::randn({c, 20, 3, 3}) * 0.3;
  torch::Tensor steps = torch::rand({c}) * 0.05 + 0.005;
  for (int64_t bits : {2, 4, 8}) {
    SCOPED_TRACE(bits);
    LsqQuantizerImpl a(QuantScheme(bits).per_channel(true), true, steps, torch::zeros({c}, torch::kInt64));
    LsqQuantizerImpl b(QuantScheme(bits).per_channel(true).ch_axis(1), true, steps,
                       torch::zeros({c}, torch::kInt64));
    {
      torch::NoGradGuard ng;  // as an optimizer step may leave it
      a.step()[7].mul_(-1);
      b.step()[7].mul_(-1);
    }
    torch::Tensor x1 = w.clone().requires_grad_(true);
    torch::Tensor x2 = w.transpose(0, 1).contiguous().requires_grad_(true);
    torch::Tensor y1 = a.forward(x1), y2 = b.forward(x2);
    // Fused: exactly FakeQuant's grid; the torch-ops STE ((round(v) - v) + v) * s
    // rounds twice, so it is only close.
    EXPECT_TRUE(torch::equal(y1.detach(), a.to_fake_quant()->forward(w)));
    EXPECT_TRUE(torch::allclose(y1.detach(), y2.detach().transpose(0, 1), 0, 1e-6));
    torch::Tensor dy = torch::randn_like(w);
    (y1 * dy).sum().backward();
    (y2 * dy.transpose(0, 1)).sum().backward();
    EXPECT_TRUE(torch::allclose(x1.grad(), x2.grad().transpose(0, 1), 1e-6, 1e-7));
    EXPECT_TRUE(torch::equal(x1.grad().ne(0), x2.grad().transpose(0, 1).ne(0)));  // same mask
    EXPECT_NE(a.step().grad()[7].item<float>(), 0.0f);
    EXPECT_TRUE(torch::allclose(a.step().grad(), b.step().grad(), 1e-4, 1e-6))
        << (a.step().grad() - b.step().grad()).abs().max().item<float>();
  }
}

// A step pushed through 0 by SGD keeps quantizing with |step| and keeps its
// gradient (times sign(step)): a negative per-channel step used to be clamped
// to 1e-8 with no gradient, zeroing its channel for good (session 14: 91 of
// 826 steps of an 8-bit resnet20 LSQ run).
TEST(QatLsq, StepPushedThroughZeroWorksWithItsMagnitudeAndKeepsItsGradient) {
  torch::manual_seed(2);
  QuantScheme ws = QuantScheme(8).per_channel(true);
  torch::Tensor wt = torch::randn({3, 2, 3, 3}) * 0.5;
  LsqQuantizerImpl pos(ws, true, torch::tensor({0.01f, 0.02f, 0.004f}), torch::zeros({3}, torch::kInt64));
  LsqQuantizerImpl neg(ws, true, torch::tensor({0.01f, 0.02f, 0.004f}), torch::zeros({3}, torch::kInt64));
  {
    torch::NoGradGuard ng;  // as an optimizer step would leave it
    neg.step()[1].mul_(-1);
  }
  torch::Tensor yp = pos.forward(wt), yn = neg.forward(wt);
  EXPECT_TRUE(torch::equal(yp.detach(), yn.detach()));
  EXPECT_GT(yn[1].abs().max().item<double>(), 0.1);  // channel 1 is alive
  (yp * wt).sum().backward();
  (yn * wt).sum().backward();
  EXPECT_NE(neg.step().grad()[1].item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(neg.step().grad()[1].item<float>(), -pos.step().grad()[1].item<float>());
  EXPECT_FLOAT_EQ(neg.step().grad()[0].item<float>(), pos.step().grad()[0].item<float>());
  EXPECT_TRUE(torch::equal(neg.to_fake_quant()->qparams().scale, pos.to_fake_quant()->qparams().scale));
  EXPECT_TRUE(torch::equal(neg.levels(1), pos.levels(1)));

  // Per tensor (the fused kernel): the same.
  QuantScheme a = QuantScheme(4).is_signed(false).symmetric(false);
  LsqQuantizerImpl ap(a, false, torch::full({1}, 0.2f), torch::zeros({1}, torch::kInt64));
  LsqQuantizerImpl an(a, false, torch::full({1}, 0.2f), torch::zeros({1}, torch::kInt64));
  {
    torch::NoGradGuard ng;
    an.step().mul_(-1);
  }
  torch::Tensor x = torch::randn({4, 3, 6, 6}).abs();
  torch::Tensor op = ap.forward(x), on = an.forward(x);
  EXPECT_TRUE(torch::equal(op.detach(), on.detach()));
  (op * x).sum().backward();
  (on * x).sum().backward();
  EXPECT_NE(an.step().grad().item<float>(), 0.0f);
  EXPECT_FLOAT_EQ(an.step().grad().item<float>(), -ap.step().grad().item<float>());
  EXPECT_FLOAT_EQ(lsq_step_value(-0.3f), 0.3f);
  EXPECT_FLOAT_EQ(lsq_step_value(0.0f), 1e-8f);
}

// ---------------------------------------------------------------- grids

struct GridCase {
  std::string method;
  bool weight;
  int64_t bits;
  int64_t levels;  // expected number of distinct output values
};

bool on_grid(const torch::Tensor& y, const torch::Tensor& levels, double tol) {
  torch::Tensor d = (y.reshape({-1, 1}) - levels.reshape({1, -1})).abs().amin(1);
  return d.max().item<double>() <= tol;
}

TEST(QatGrid, OutputsLieOnGridWithRightLevelCount) {
  QatOptions opt;
  QatOptions paper = QatOptions().dorefa_paper_grid(true);
  for (int64_t b : {2, 3, 4, 8}) {
    const int64_t n = int64_t{1} << b;
    std::vector<GridCase> cases = {
        {"lsq", true, b, n},  {"lsq", false, b, n},  {"lsq+", true, b, n},
        {"lsq+", false, b, n}, {"pact", true, b, n - 1}, {"pact", false, b, n},
        {"dorefa", true, b, n - 1}, {"apot", true, b, n - 1}, {"apot", false, b, n},
        {"dorefa-paper", true, b, n}};
    for (const auto& c : cases) {
      SCOPED_TRACE(c.method + (c.weight ? " weight " : " activation ") + std::to_string(b));
      QuantizerInit init;
      init.weight = c.weight;
      init.options = c.method == "dorefa-paper" ? &paper : &opt;
      torch::Tensor x;
      if (c.weight) {
        init.scheme = QuantScheme(b);
        x = torch::linspace(-1, 1, 40000).reshape({40, 1000});
        init.value = x;
        init.qparams = init.scheme.qparams(torch::tensor({-1.0f}), torch::tensor({1.0f}));
      } else {
        init.scheme = QuantScheme(b).is_signed(false).symmetric(false);
        x = torch::linspace(-0.5, 3, 40000).reshape({1, 40000});
        init.qparams = init.scheme.qparams(torch::tensor({0.0f}), torch::tensor({2.0f}));
      }
      const std::string m = c.method == "dorefa-paper" ? "dorefa" : c.method;
      const QatMethod& method = qat_method(m);
      QatQuantizerPtr q = (c.weight ? method.weight : method.activation)(init);
      ASSERT_TRUE(q);
      torch::NoGradGuard ng;
      // Weights: three times the calibrated range, so that fixed steps reach every level.
      torch::Tensor xin = c.weight ? x * 3 : x;
      torch::Tensor y = q->forward(xin);
      torch::Tensor lv = q->levels();
      EXPECT_EQ(lv.numel(), c.levels);
      const double tol = 1e-5 * lv.abs().max().item<double>();
      EXPECT_TRUE(on_grid(y, lv, tol));
      // Dense inputs beyond the clip range reach every level.
      EXPECT_EQ(std::get<0>(torch::_unique(y.flatten())).numel(), c.levels);
      if (q->uniform() && (c.method != "dorefa-paper" || b < 8)) {
        auto fq = q->to_fake_quant();  // equivalent FakeQuant gives the same values
        EXPECT_TRUE(torch::allclose(fq->forward(q->fq_input(xin)), y, 0, tol));
      }
    }
  }
  // The activation method of dorefa keeps the calibrated FakeQuant.
  EXPECT_FALSE(qat_method("dorefa").activation);
}

TEST(QatGrid, ApotLevels) {
  EXPECT_TRUE(torch::allclose(apot_levels(2), torch::tensor({0.0f, 0.25f, 0.5f, 1.0f})));
  EXPECT_TRUE(torch::allclose(apot_levels(1), torch::tensor({0.0f, 1.0f})));
  for (int64_t m = 1; m <= 8; ++m) {
    torch::Tensor l = apot_levels(m);
    EXPECT_EQ(l.numel(), int64_t{1} << m);
    EXPECT_FLOAT_EQ(l[-1].item<float>(), 1.0f);
    // every level is a sum of at most ceil(m/2) powers of two: check m = 4 exactly
    if (m == 4) {
      std::set<float> want;
      for (float a : {0.0f, 1.0f, 0.25f, 1.0f / 16})
        for (float c : {0.0f, 0.5f, 0.125f, 1.0f / 32}) want.insert((a + c) / 1.5f);
      std::set<float> got;
      for (int64_t i = 0; i < l.numel(); ++i) got.insert(l[i].item<float>());
      ASSERT_EQ(got.size(), want.size());
      auto g = got.begin();
      for (float w : want) EXPECT_NEAR(*g++, w, 1e-6);
    }
  }
  EXPECT_THROW_MSG(apot_levels(0), ValueError, "APoT: magnitude bits must be in [1, 8], got 0");
}

// The fused APoT operator against autograd of the formula in torch ops
// (straight-through nearest level, RCF clip): values and both gradients.
// APoT weights come back as Q((w - mu) / sigma) * sigma + mu: without the
// mean, fold simulation divided -mu by small per-channel fold factors and a
// W8A8 resnet20 run diverged to NaN (session 14).
TEST(QatGrid, ApotWeightsKeepTheirMean) {
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({4, 2, 3, 3}) * 0.2 + 0.5;
  {
    torch::NoGradGuard ng;
    w[0].mul_(1e-3);  // a channel with a small fold factor
  }
  ApotQuantizerImpl q(QuantScheme(8).per_channel(true), true, true, 3.0, 4);
  torch::Tensor y = q.forward(w);
  EXPECT_LT((y - w).abs().max().item<double>(), 0.05);
  EXPECT_LT((y[0] - w[0]).abs().max().item<double>(), 0.05);  // was w[0] - mean(w), ~0.4 off
  EXPECT_NEAR(y.mean().item<double>(), w.mean().item<double>(), 0.01);
  // Every output is one of levels() (per channel: the channel's own).
  for (int64_t c = 0; c < 4; ++c) EXPECT_TRUE(on_grid(y[c].detach(), q.levels(c), 1e-5)) << c;
  EXPECT_EQ(q.named_buffers()["mu"].numel(), 4);
  EXPECT_THROW_MSG(q.forward(torch::randn({3, 2, 3, 3})), ValueError,
                   "APoT: 4 per-channel statistics do not fit a weight of shape [3, 2, 3, 3]");
}

// Per-channel schemes normalize each output channel on its own: a channel 1000x
// smaller than the rest keeps its relative precision. With per-layer
// statistics (the per-tensor scheme) its values collapse to about its mean,
// an error that fold simulation divides by the channel's small fold factor
// (resnet20 W4A4 went to inf in 117 steps, session 15).
TEST(QatGrid, ApotPerChannelKeepsSmallChannels) {
  torch::manual_seed(6);
  torch::Tensor w = torch::randn({8, 16, 3, 3}) * 0.2;
  {
    torch::NoGradGuard ng;
    w[3].mul_(1e-3);
  }
  auto rel_err = [&](const QuantScheme& s) {
    QuantizerInit init{s, {}, true, w, nullptr};
    QatQuantizerPtr q = make_apot_quantizer(init);
    torch::NoGradGuard ng;
    torch::Tensor y = q->forward(w);
    return ((y[3] - w[3]).abs().max() / w[3].abs().max()).item<double>();
  };
  EXPECT_LT(rel_err(QuantScheme(4).per_channel(true)), 0.3);
  EXPECT_GT(rel_err(QuantScheme(4)), 0.9);
}

TEST(QatGrid, ApotFusedMatchesReferenceFormula) {
  auto reference = [](const torch::Tensor& x, const torch::Tensor& alpha, const torch::Tensor& levels,
                      bool is_signed) {
    torch::Tensor a = alpha.clamp_min(1e-8).reshape({});
    torch::Tensor xn = x / a;
    torch::Tensor xc = is_signed ? xn.clamp(-1.0, 1.0) : xn.clamp(0.0, 1.0);
    torch::Tensor q;
    {
      torch::NoGradGuard ng;
      // Nearest level: the number of midpoints <= |x| (ties go up).
      torch::Tensor mid = (levels.slice(0, 1) + levels.slice(0, 0, -1)) * 0.5;
      q = levels.index({torch::bucketize(xc.abs(), mid, /*out_int32=*/false, /*right=*/true)});
      if (is_signed) q = q * torch::sign(xc);
    }
    return (xc + (q - xc).detach()) * a;
  };
  torch::manual_seed(11);
  for (int64_t m : {1, 2, 3, 4, 8}) {  // <= 16 levels: the vector count and shuffle; 8: 256 levels, the cell table
    for (bool sgn : {true, false}) {
      SCOPED_TRACE(std::to_string(m) + (sgn ? " signed" : " unsigned"));
      torch::Tensor levels = apot_levels(m);
      torch::Tensor x0 = torch::randn({70000}) * 1.5;  // several chunks, many values beyond alpha
      torch::Tensor dy = torch::randn({70000});
      torch::Tensor x1 = x0.clone().requires_grad_(true), x2 = x0.clone().requires_grad_(true);
      torch::Tensor a1 = torch::full({1}, 1.3f).requires_grad_(true), a2 = a1.detach().clone().requires_grad_(true);
      torch::Tensor y1 = apot_quantize(x1, a1, levels, sgn), y2 = reference(x2, a2, levels, sgn);
      EXPECT_LT((y1 - y2).abs().max().item<float>(), 1e-6f);
      (y1 * dy).sum().backward();
      (y2 * dy).sum().backward();
      EXPECT_LT((x1.grad() - x2.grad()).abs().max().item<float>(), 1e-5f);  // reference: (dy * a) / a
      EXPECT_NEAR(a1.grad().item<double>(), a2.grad().item<double>(), 1e-3 * (1 + std::abs(a2.grad().item<double>())));
      // grad_scale multiplies alpha's gradient only.
      torch::Tensor x3 = x0.clone().requires_grad_(true), a3 = a2.detach().clone().requires_grad_(true);
      torch::Tensor y3 = apot_quantize(x3, a3, levels, sgn, 0.25);
      EXPECT_TRUE(torch::equal(y3, y1));
      (y3 * dy).sum().backward();
      EXPECT_TRUE(torch::equal(x3.grad(), x1.grad()));
      EXPECT_NEAR(a3.grad().item<double>(), 0.25 * a1.grad().item<double>(), 1e-6 * (1 + std::abs(a1.grad().item<double>())));
    }
  }
  EXPECT_THROW_MSG(apot_quantize(torch::zeros({3}), torch::ones({1}), apot_levels(2), true, 0.0), ValueError,
                   "APoT: grad_scale must be > 0, got 0");
  EXPECT_THROW_MSG(apot_quantize(torch::zeros({3}, torch::kFloat64), torch::ones({1}), apot_levels(2), true),
                   ValueError, "APoT: x must be float32, got Double");
}

// alpha's gradient is scaled as LSQ scales its step's: g = 1 / sqrt(N * Q_P),
// N = one sample's features (activations) or the weights, Q_P = positive levels.
// Unscaled, resnet20 W2A2 diverged (apot.h).
TEST(QatGrid, ApotAlphaGradientScale) {
  torch::manual_seed(5);
  const QuantScheme u2 = QuantScheme(2).is_signed(false);
  ApotQuantizerImpl act(u2, false, false, 1.0);
  torch::Tensor x = torch::rand({4, 3, 5, 5}) * 1.5;
  EXPECT_NEAR(act.alpha_grad_scale(x), 1.0 / std::sqrt(75.0 * 3.0), 1e-12);  // grid {0, 1/4, 1/2, 1}
  act.forward(x).sum().backward();
  torch::Tensor a = torch::ones({1}).requires_grad_(true);
  apot_quantize(x, a, apot_levels(2), false).sum().backward();
  EXPECT_NEAR(act.alpha().grad().item<double>(), a.grad().item<double>() / std::sqrt(225.0), 1e-5);
  ApotQuantizerImpl wq(QuantScheme(2), true, true, 1.0);  // ternary: Q_P = 1
  EXPECT_NEAR(wq.alpha_grad_scale(torch::zeros({8, 3, 3, 3})), 1.0 / std::sqrt(216.0), 1e-12);
}

// The fused quantizers run over channels-last activations in place (training
// runs channels-last): the same values and gradients as on NCHW, the output in
// the input's layout, no copy to NCHW and back.
TEST(QatGrid, ChannelsLastNeedsNoCopy) {
  torch::manual_seed(8);
  const torch::Tensor x0 = torch::randn({4, 6, 5, 7}) * 2;
  const torch::Tensor dy = torch::randn({4, 6, 5, 7});
  using Fn = std::function<torch::Tensor(const torch::Tensor&)>;
  const torch::Tensor step = torch::full({1}, 0.3f), alpha = torch::full({1}, 2.5f);
  const std::vector<std::pair<std::string, Fn>> fns = {
      {"fake_quant", [](const torch::Tensor& x) { return fake_quantize_per_tensor(x, 0.1, 3, 0, 15); }},
      {"lsq", [&](const torch::Tensor& x) { return lsq_quantize(x, step, torch::Tensor(), -8, 7, 0.5); }},
      {"apot", [&](const torch::Tensor& x) { return apot_quantize(x, alpha, apot_levels(3), true, 0.5); }},
  };
  for (const auto& [name, f] : fns) {
    SCOPED_TRACE(name);
    torch::Tensor a = x0.clone().requires_grad_(true);
    torch::Tensor b = x0.contiguous(at::MemoryFormat::ChannelsLast).requires_grad_(true);
    torch::Tensor ya = f(a), yb = f(b);
    EXPECT_TRUE(yb.is_contiguous(at::MemoryFormat::ChannelsLast));
    EXPECT_TRUE(torch::equal(ya, yb));
    (ya * dy).sum().backward();
    (yb * dy).sum().backward();
    EXPECT_TRUE(torch::equal(a.grad(), b.grad()));
  }
}

// The cell table of the large grids (> 16 levels) is exact at the hard
// points: every level, every midpoint (ties go up) and the floats beside them;
// a nan input stays nan.
TEST(QatGrid, ApotLargeGridsExactAtMidpoints) {
  for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8}) {  // <= 4: the vector count and shuffle (sizes of 16 and more)
    SCOPED_TRACE(m);
    torch::Tensor levels = apot_levels(m);
    torch::Tensor mid = (levels.slice(0, 1) + levels.slice(0, 0, -1)) * 0.5;
    torch::Tensor up = torch::nextafter(mid, torch::full_like(mid, 2.0f));
    torch::Tensor down = torch::nextafter(mid, torch::zeros_like(mid));
    torch::Tensor x = torch::cat({levels, mid, up, down});
    torch::Tensor expect = levels.index({torch::bucketize(x, mid, false, /*right=*/true)});
    torch::Tensor y = apot_quantize(x, torch::ones({1}), levels, false);
    EXPECT_TRUE(torch::equal(y, expect));
    EXPECT_TRUE(torch::equal(apot_quantize(-x, torch::ones({1}), levels, true), -expect));
  }
  for (int64_t m : {2, 8}) {
    torch::Tensor x = torch::full({40}, 0.3f);
    x[3] = NAN;
    x[35] = NAN;  // inside a 16-value vector and in the tail
    torch::Tensor y = apot_quantize(x, torch::ones({1}), apot_levels(m), true);
    EXPECT_TRUE(std::isnan(y[3].item<float>()) && std::isnan(y[35].item<float>())) << m;
    EXPECT_FALSE(std::isnan(y[0].item<float>())) << m;
  }
}

// The forward kernels (256-value blocks; AVX2 and AVX-512 registers for
// grids of <= 16 levels, where this CPU has them) give the same bits: at
// levels, midpoints and their neighbours, +-0, beyond the clip, inf and nan,
// on a length that leaves a tail for the block path. Larger grids (m >= 5)
// take the block path under every kernel: their bits are checked against the
// formula here too.
TEST(QatGrid, ApotKernelsGiveTheSameBits) {
  using detail::ApotKernel;
  std::vector<ApotKernel> kernels = {ApotKernel::kBlock};
  if (__builtin_cpu_supports("avx2")) kernels.push_back(ApotKernel::kAvx2);
  if (__builtin_cpu_supports("avx512f")) kernels.push_back(ApotKernel::kAvx512);
  torch::manual_seed(4);
  for (int64_t m : {1, 2, 3, 4, 5, 6, 7, 8}) {
    for (bool sgn : {true, false}) {
      SCOPED_TRACE(std::to_string(m) + (sgn ? " signed" : " unsigned"));
      const float alpha = 1.7f;
      torch::Tensor levels = apot_levels(m);
      torch::Tensor mid = (levels.slice(0, 1) + levels.slice(0, 0, -1)) * 0.5;
      torch::Tensor hard = torch::cat({levels, mid, torch::nextafter(mid, torch::full_like(mid, 2.0f)),
                                       torch::nextafter(mid, torch::zeros_like(mid))}) * alpha;
      torch::Tensor x = torch::cat({hard, -hard, torch::randn({1000}) * 2,
                                    torch::tensor({0.0f, -0.0f, alpha, -alpha, INFINITY, -INFINITY, NAN, 5.0f, -5.0f})});
      ASSERT_NE(x.numel() % 16, 0);  // a tail for the block path
      torch::Tensor ref = detail::apot_forward_with(x, alpha, levels, sgn, ApotKernel::kBlock);
      torch::Tensor back = ref.isnan();
      EXPECT_EQ(back.sum().item<int64_t>(), 1);  // the nan stays nan
      // The block path against the formula (nearest level, ties up, sign of v).
      torch::Tensor v = (x / alpha).clamp(sgn ? -1.0 : 0.0, 1.0);
      torch::Tensor want = levels.index({torch::bucketize(v.abs(), mid, false, /*right=*/true)}) * torch::sign(v) * alpha;
      EXPECT_TRUE(torch::equal(ref.masked_fill(back, 0), want.masked_fill(back, 0)));
      for (ApotKernel k : kernels) {
        SCOPED_TRACE(static_cast<int>(k));
        torch::Tensor y = detail::apot_forward_with(x, alpha, levels, sgn, k);
        EXPECT_TRUE(torch::equal(y.isnan(), back));
        // Bits, so that -0 and +0 count as different.
        EXPECT_TRUE(torch::equal(y.masked_fill(back, 0).view(torch::kInt32), ref.masked_fill(back, 0).view(torch::kInt32)));
      }
    }
  }
  if (!__builtin_cpu_supports("avx512f"))
    EXPECT_THROW_MSG(detail::apot_forward_with(torch::zeros({3}), 1.0, apot_levels(2), true, ApotKernel::kAvx512),
                     ValueError, "APoT: this CPU cannot run the requested kernel");
}

// The backward works from the forward's code alone: gradients at the clip
// bounds (inside: d/dx = 1), beyond them (d/d alpha = the sign, or 0 below an
// unsigned grid), exactly at a level (code 0, still inside), and a nan input
// (d/dx = 0, alpha's gradient nan). Grad mode off: no code, same values.
TEST(QatGrid, ApotBackwardFromTheCode) {
  torch::Tensor levels = apot_levels(2);  // {0, 1/4, 1/2, 1}
  for (bool sgn : {true, false}) {
    SCOPED_TRACE(sgn ? "signed" : "unsigned");
    // Three copies: 21 values, so both the 8-lane loop and its tail run.
    torch::Tensor x = torch::tensor({2.0f, -2.0f, 3.0f, -3.0f, 1.0f, 0.5f, 0.6f}).repeat({3}).requires_grad_(true);
    torch::Tensor a = torch::full({1}, 2.0f).requires_grad_(true);
    torch::Tensor dy = torch::tensor({1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f}).repeat({3});
    torch::Tensor y = apot_quantize(x, a, levels, sgn);
    (y * dy).sum().backward();
    // x / a = 1, -1, 1.5, -1.5, 0.5, 0.25, 0.3
    const std::vector<float> dx_want = {1, sgn ? 2.0f : 0.0f, 0, 0, 5, 6, 7};
    EXPECT_TRUE(torch::equal(x.grad(), torch::tensor(dx_want).repeat({3})));
    // d/d alpha: 1 at v = 1 (Pi(1) - 1 = 0 inside), then sign beyond, 0 at levels, 0.25 - 0.3 at 0.3.
    const double below = sgn ? -1.0 : 0.0;  // v = -1 signed: Pi - v = 0 inside; unsigned: clipped at 0
    const double want = 1 * 0.0 + 2 * 0.0 + 3 * 1.0 + 4 * below + 5 * 0.0 + 6 * 0.0 + 7 * (0.25 - 0.3);
    EXPECT_NEAR(a.grad().item<double>(), 3 * want, 1e-5);
    {
      torch::NoGradGuard ng;
      EXPECT_TRUE(torch::equal(apot_quantize(x, a, levels, sgn), y.detach()));
    }
  }
  torch::Tensor xn = torch::tensor({0.3f, NAN, 0.7f}).requires_grad_(true);
  torch::Tensor an = torch::ones({1}).requires_grad_(true);
  apot_quantize(xn, an, levels, true).sum().backward();
  EXPECT_TRUE(torch::equal(xn.grad(), torch::tensor({1.0f, 0.0f, 1.0f})));
  EXPECT_TRUE(std::isnan(an.grad().item<float>()));
}

// ---------------------------------------------------------------- learnable parameters

TEST(QatParams, ClipAndOffsetGetGradients) {
  torch::manual_seed(2);
  QuantScheme u4 = QuantScheme(4).is_signed(false).symmetric(false);
  torch::Tensor x = torch::randn({8, 100}).abs() * 2;
  // PACT: d/d alpha = number of x >= alpha (upstream gradient 1), exactly.
  PactQuantizerImpl pact(u4, 1.5, 0);
  pact.forward(x).sum().backward();
  EXPECT_FLOAT_EQ(pact.alpha().grad().item<float>(), (x > 1.5).sum().item<float>());
  EXPECT_NEAR(pact.clip_penalty().item<double>(), 2.25, 1e-6);
  // LSQ+: step and offset both learn.
  LsqPlusQuantizerImpl lp(u4, 0.1, -0.2);
  (lp.forward(x) - x).square().sum().backward();
  EXPECT_NE(lp.step().grad().item<float>(), 0.0f);
  EXPECT_NE(lp.offset().grad().item<float>(), 0.0f);
  // APoT: RCF gradient, sign(x) beyond alpha, Pi(x/alpha) - x/alpha inside.
  ApotQuantizerImpl ap(u4, false, false, 1.0);
  torch::Tensor xs = torch::tensor({0.3f, 0.9f, 2.0f, 3.0f});
  ap.forward(xs).sum().backward();
  torch::Tensor lv = apot_levels(4);
  auto nearest = [&](float v) { return lv[(lv - v).abs().argmin()].item<float>(); };
  float want = (nearest(0.3f) - 0.3f) + (nearest(0.9f) - 0.9f) + 1 + 1;
  want /= std::sqrt(4.0f * 15.0f);  // alpha's gradient scale 1 / sqrt(N * Q_P): 4 values, 15 positive levels
  EXPECT_NEAR(ap.alpha().grad().item<float>(), want, 1e-5);
  // DoReFa weights: gradient reaches the latent weights through tanh.
  torch::Tensor w = (torch::randn({4, 3, 3, 3}) * 0.3).requires_grad_(true);
  DorefaQuantizerImpl dq(QuantScheme(3).per_channel(true), torch::full({4}, 0.5f), false);
  (dq.forward(w) * torch::randn({4, 3, 3, 3})).sum().backward();
  EXPECT_GT(w.grad().abs().sum().item<float>(), 0.0f);
  // LSQ+ weight init: max(|mu - 3 sigma|, |mu + 3 sigma|) / 2^(b-1).
  torch::Tensor wi = torch::randn({1000});
  double mu = wi.mean().item<double>(), sd = wi.std().item<double>();
  EXPECT_NEAR(lsq_plus_weight_step(wi, QuantScheme(4)).item<double>(),
              std::max(std::abs(mu - 3 * sd), std::abs(mu + 3 * sd)) / 8, 1e-6);
}

// A ReLU before an unsigned activation quantizer with zero point 0 is
// redundant: the quantizer clips at 0 with zero gradient below it.
TEST(QatParams, ReluAbsorbedOnlyWhereValuesAndGradientsAgree) {
  torch::manual_seed(4);
  QuantScheme u4 = QuantScheme(4).is_signed(false).symmetric(false);
  torch::Tensor x0 = torch::randn({16, 200});
  x0 = x0 + (x0 == 0).to(torch::kFloat32) * 0.5;  // no exact zeros
  auto check = [&](TransformImpl& q, torch::Tensor param, const char* what) {
    SCOPED_TRACE(what);
    ASSERT_TRUE(q.absorbs_relu());
    torch::Tensor up = torch::randn({16, 200});
    auto run = [&](bool relu) {
      torch::Tensor x = x0.clone().requires_grad_(true);
      if (param.grad().defined()) param.mutable_grad().zero_();
      torch::Tensor y = q.forward(relu ? torch::relu(x) : x);
      (y * up).sum().backward();
      return std::make_tuple(y.detach(), x.grad().clone(), param.grad().clone());
    };
    auto [y1, gx1, gp1] = run(true);
    auto [y2, gx2, gp2] = run(false);
    EXPECT_TRUE(torch::equal(y1, y2));
    EXPECT_TRUE(torch::equal(gx1, gx2));
    EXPECT_NEAR(gp1.item<float>(), gp2.item<float>(), 1e-4 * (1 + std::abs(gp1.item<float>())));
    EXPECT_GT((x0 < 0).sum().item<int64_t>(), 100);  // the clipped side was exercised
  };
  LsqQuantizerImpl lsq(u4, false, torch::full({1}, 0.2f), torch::zeros({1}, torch::kInt64));
  check(lsq, lsq.step(), "lsq");
  PactQuantizerImpl pact(u4, 1.5, 0);
  check(pact, pact.alpha(), "pact");
  ApotQuantizerImpl apot(u4, false, false, 1.5);
  check(apot, apot.alpha(), "apot");
  // Not absorbed: a zero point above qmin (codes below 0), weights, signed, LSQ+.
  EXPECT_FALSE(ApotQuantizerImpl(u4, false, true, 1.5).absorbs_relu());  // signed grid
  EXPECT_FALSE(ApotQuantizerImpl(QuantScheme(4), true, true, 1.5).absorbs_relu());  // weights
  EXPECT_FALSE(LsqQuantizerImpl(u4, false, torch::full({1}, 0.2f), torch::full({1}, 3, torch::kInt64)).absorbs_relu());
  EXPECT_FALSE(LsqQuantizerImpl(u4, true, torch::full({1}, 0.2f), torch::zeros({1}, torch::kInt64)).absorbs_relu());
  EXPECT_FALSE(LsqQuantizerImpl(QuantScheme(4), false, torch::full({1}, 0.2f), torch::zeros({1}, torch::kInt64))
                   .absorbs_relu());
  EXPECT_FALSE(PactQuantizerImpl(u4, 1.5, 2).absorbs_relu());
  EXPECT_FALSE(LsqPlusQuantizerImpl(u4, 0.1, -0.2).absorbs_relu());
  // LSQ+ converts to a FakeQuant only while its zero point is in range.
  EXPECT_TRUE(LsqPlusQuantizerImpl(u4, 0.1, -0.2).uniform());
  EXPECT_FALSE(LsqPlusQuantizerImpl(u4, 0.1, 0.35).uniform());
  EXPECT_THROW_MSG(LsqPlusQuantizerImpl(u4, 0.1, 0.35).to_fake_quant(), ValueError, "needs a zero point outside [0, 15]");
}

// ---------------------------------------------------------------- run_qat

// A quarter-width resnet8 (with its batch norms) trained for `epochs` on `train`.
GraphModule trained_resnet8(const Dataset& train, int64_t epochs) {
  ModelOptions mo;
  mo.input_shape = {1, 16, 16};
  mo.width = 0.25;
  torch::manual_seed(0);
  GraphModule m(build_model("resnet8", mo));
  Trainer t(m, TrainOptions(epochs).batch_size(64).lr(0.05).weight_decay(0).progress("off").seed(0));
  t.fit(train);
  m->eval();
  return m;
}

struct TinyTask {
  Dataset train = make_synthetic(768, {1, 16, 16}, 10, 1);
  Dataset test = make_synthetic(256, {1, 16, 16}, 10, 2);
  Graph folded_graph;
  TensorMap weights;
  TinyTask() {
    GraphModule m = trained_resnet8(train, 2);
    GraphModule f = fold_batch_norm(m);
    folded_graph = f->graph();
    weights = f->state();
  }
  GraphModule fp32() const {
    GraphModule m(folded_graph);
    m->load_state(weights);
    m->eval();
    return m;
  }
  GraphModule calibrated(int64_t bits) const {
    GraphModule m = fp32();
    attach_quantizers(m, QuantConfig()
                             .weight(QuantScheme(bits).per_channel(true))
                             .activation(QuantScheme(bits).is_signed(false).symmetric(false)));
    calibrate(m, train, 2, 128);
    return m;
  }
};
const TinyTask& tiny() {
  static TinyTask* t = new TinyTask();
  return *t;
}

QatOptions quick(const std::string& method, int64_t epochs = 2) {
  return QatOptions().method(method).train(
      TrainOptions(epochs).batch_size(64).lr(0.01).progress("off").seed(0));
}

// An APoT model keeps its quantizers (no FakeQuant form); save_qat_model lists
// them so that load_model rebuilds them: the loaded model computes the same
// outputs. Before, `nnopt quantize --method apot` wrote a model.nnopt that
// `nnopt eval` refused ("loaded state has tensor 'avgpool.act_transform.scale'
// that the model does not have").
TEST(QatSave, ApotModelLoadsAgain) {
  const TinyTask& t = tiny();
  GraphModule m = t.calibrated(3);
  attach_qat_quantizers(m, quick("apot"));
  run_qat(m, t.train, nullptr, quick("apot", 1));
  m->eval();
  torch::NoGradGuard ng;
  const torch::Tensor x = t.test.images.slice(0, 0, 64);
  const torch::Tensor y = m->forward(x);
  const std::string path = test::temp_dir("qat_save_apot") + "/model.nnopt";
  save_qat_model(path, m, R"({"kind": "model"})");
  std::string meta;
  GraphModule loaded = load_model(path, &meta);
  EXPECT_TRUE(has_qat_transforms(meta));
  EXPECT_EQ(find_qat_quantizers(loaded).size(), find_qat_quantizers(m).size());
  loaded->eval();
  EXPECT_TRUE(torch::equal(loaded->forward(x), y));
  // Bad records: a clear error, the model unchanged.
  GraphModule plain = t.calibrated(3);
  remove_quantizers(plain);
  auto with = [&](const std::string& field, const nlohmann::json& v) {
    nlohmann::json j = nlohmann::json::parse(meta);
    j["qat_transforms"][0][field] = v;
    return j.dump();
  };
  EXPECT_THROW_MSG(restore_qat_transforms(plain, with("kind", "binary")), ValueError,
                   "unknown kind 'binary' (known: fake_quant, apot)");
  EXPECT_THROW_MSG(restore_qat_transforms(plain, with("node", "conv9")), ValueError,
                   "QAT transform 0 ('conv9' activation): no such node in the model's graph");
  EXPECT_THROW_MSG(restore_qat_transforms(plain, with("channels", -1)), ValueError,
                   "channels must be in [1, 2^20], got -1");
  EXPECT_TRUE(find_qat_quantizers(plain).empty());
  // Uniform QAT quantizers are converted first, not saved as they are.
  GraphModule lsq = t.calibrated(3);
  attach_qat_quantizers(lsq, quick("lsq"));
  EXPECT_THROW_MSG(save_qat_model(path + ".lsq", lsq, "{}"), ValueError, "convert uniform quantizers first");
  EXPECT_FALSE(path_exists(path + ".lsq"));
}

TEST(QatRun, EachMethodTrainsAndLowersLoss) {
  const TinyTask& t = tiny();
  for (const auto& name : qat_method_names()) {
    SCOPED_TRACE(name);
    GraphModule m = t.calibrated(3);
    attach_qat_quantizers(m, quick(name));
    EvalResult before = evaluate(m, t.train);
    TrainResult r = run_qat(m, t.train, &t.test, quick(name));
    EvalResult after = evaluate(m, t.train);
    EXPECT_LT(after.loss, before.loss) << before.loss << " -> " << after.loss;
    EXPECT_FALSE(find_qat_quantizers(m).empty());
    EXPECT_EQ(r.history.size(), 2u);
    if (name == "pact" || name == "apot") EXPECT_TRUE(r.history.back().extra.count("loss_clip_l2"));
    // Back to FakeQuant: same function for uniform grids; APoT refuses.
    torch::NoGradGuard ng;
    torch::Tensor x = t.test.images.slice(0, 0, 64);
    m->eval();
    // LSQ+ offsets are any real number; the FakeQuant's zero point is an
    // integer, so conversion rounds -offset / step (a shift of up to half a
    // step, large on this 3-bit grid). Snap the offsets first so that the
    // conversion itself is checked exactly.
    for (const auto& a : find_qat_quantizers(m))
      if (auto lp = std::dynamic_pointer_cast<LsqPlusQuantizerImpl>(a.q)) {
        const float st = std::max(lp->step().item<float>(), 1e-8f);
        lp->offset().fill_(-std::nearbyint(-lp->offset().item<float>() / st) * st);
      }
    torch::Tensor y = m->forward(x);
    bool convertible = true;
    for (const auto& a : find_qat_quantizers(m)) convertible = convertible && a.q->uniform();
    if (name == "apot") EXPECT_FALSE(convertible);
    if (!convertible) {  // APoT always; LSQ+ when an offset left the zero point's range
      EXPECT_THROW_MSG(convert_qat_to_fake_quant(m), ValueError, "levels are not a uniform grid");
      continue;
    }
    convert_qat_to_fake_quant(m);
    EXPECT_TRUE(find_qat_quantizers(m).empty());
    torch::Tensor y2 = m->forward(x);
    EXPECT_TRUE(torch::allclose(y, y2, 1e-3, 1e-3)) << (y - y2).abs().max().item<float>();
  }
}

TEST(QatRun, Lsq8BitLowersToInt8AndDistills) {
  const TinyTask& t = tiny();
  GraphModule m = t.calibrated(8);
  QatOptions o = quick("lsq", 1);
  TrainResult r = run_qat(m, t.train, &t.test, o, t.fp32());
  EXPECT_TRUE(r.history.back().extra.count("loss_kd"));
  convert_qat_to_fake_quant(m);
  Int8Model q = lower_to_int8(m);
  torch::NoGradGuard ng;
  m->eval();
  torch::Tensor ref = m->forward(t.test.images), y = q.forward(t.test.images);
  EXPECT_GE(y.argmax(1).eq(ref.argmax(1)).to(torch::kFloat).mean().item<float>(), 0.98f);
}

TEST(QatRun, ResumesFromCheckpoint) {
  const TinyTask& t = tiny();
  std::string dir = test::temp_dir("qat_resume");
  QatOptions o = quick("pact", 2);
  o.train().schedule("constant");  // the 1-epoch part must see the same learning rates
  GraphModule full = t.calibrated(4);
  run_qat(full, t.train, nullptr, o);
  GraphModule part = t.calibrated(4);
  QatOptions o1 = o;
  o1.train().epochs(1).out_dir(dir);
  run_qat(part, t.train, nullptr, o1);
  GraphModule resumed = t.calibrated(4);
  QatOptions o2 = o;
  o2.train().out_dir(dir).resume(true);
  TrainResult r = run_qat(resumed, t.train, nullptr, o2);
  EXPECT_EQ(r.resumed_from, 1);
  auto a = full->state(), b = resumed->state();
  for (const auto& [k, v] : a) EXPECT_TRUE(torch::allclose(v.to(torch::kFloat), b.at(k).to(torch::kFloat), 1e-5, 1e-6)) << k;
}

// ---------------------------------------------------------------- batch-norm fold simulation

// TinyTask keeps only the folded model; these tests need the batch norms.
GraphModule tiny_unfolded() { return trained_resnet8(tiny().train, 1); }

// tiny_unfolded with fold simulation, W/A quantizers at `bits`, calibrated.
GraphModule calibrated_fold_simulation(int64_t bits) {
  GraphModule m = tiny_unfolded();
  m->set_bn_fold_simulation(true);
  attach_quantizers(m, QuantConfig()
                           .weight(QuantScheme(bits).per_channel(true))
                           .activation(QuantScheme(bits).is_signed(false).symmetric(false)));
  calibrate(m, tiny().train, 2, 128);
  return m;
}

// The compare table's LSQ runs train under fold simulation and resume after
// interruptions: the resumed run must end where the uninterrupted one does
// (weights, steps, batch-norm statistics).
TEST(QatFoldSimulation, LsqResumesToTheSameState) {
  const TinyTask& t = tiny();
  std::string dir = test::temp_dir("qat_resume_lsq_sim");
  QatOptions o = quick("lsq", 2);
  o.train().schedule("constant").max_batches(6);
  GraphModule full = calibrated_fold_simulation(8);
  run_qat(full, t.train, nullptr, o);
  GraphModule part = calibrated_fold_simulation(8);
  QatOptions o1 = o;
  o1.train().epochs(1).out_dir(dir);
  run_qat(part, t.train, nullptr, o1);
  GraphModule resumed = calibrated_fold_simulation(8);
  QatOptions o2 = o;
  o2.train().out_dir(dir).resume(true);
  TrainResult r = run_qat(resumed, t.train, nullptr, o2);
  EXPECT_EQ(r.resumed_from, 1);
  auto a = full->state(), b = resumed->state();
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [k, v] : a)
    EXPECT_TRUE(torch::allclose(v.to(torch::kFloat), b.at(k).to(torch::kFloat), 1e-5, 1e-6)) << k;
  full->eval();
  resumed->eval();
  torch::NoGradGuard ng;
  const torch::Tensor x = t.test.images.narrow(0, 0, 64);
  EXPECT_TRUE(torch::allclose(full->forward(x), resumed->forward(x), 1e-4, 1e-4));
}

TEST(QatFoldSimulation, EvalEqualsTheFoldedModelAndFoldingKeepsTheQuantizers) {
  const TinyTask& t = tiny();
  GraphModule sim = tiny_unfolded();
  torch::NoGradGuard ng;
  const torch::Tensor x = t.test.images.slice(0, 0, 64);
  const torch::Tensor fp = sim->forward(x);
  sim->set_bn_fold_simulation(true);
  EXPECT_TRUE(sim->bn_fold_simulation());
  EXPECT_LE((sim->forward(x) - fp).abs().max().item<double>(), 1e-5) << "no transform: the plain model";
  // What the weight quantizers see is the folded weight.
  GraphModule ref = fold_batch_norm(sim);
  EXPECT_LE((sim->weight_transform_input("conv1") - ref->node_module("conv1").weight).abs().max().item<double>(),
            1e-6);
  const QuantConfig cfg = QuantConfig()
                              .weight(QuantScheme(4).per_channel(true))
                              .activation(QuantScheme(4).is_signed(false).symmetric(false));
  attach_quantizers(sim, cfg);
  calibrate(sim, t.train, 2, 128);
  sim->eval();
  const torch::Tensor ys = sim->forward(x);
  const size_t nq = find_quantizers(sim).size();
  GraphModule folded = fold_batch_norm(sim);
  folded->eval();
  EXPECT_EQ(find_quantizers(folded).size(), nq);
  for (const Node& n : folded->graph().nodes()) EXPECT_NE(n.op, OpKind::kBatchNorm) << n.name;
  EXPECT_LE((folded->forward(x) - ys).abs().max().item<double>(), 1e-4);
  // The same ranges as quantizing the folded model directly.
  attach_quantizers(ref, cfg);
  calibrate(ref, t.train, 2, 128);
  auto qa = find_quantizers(folded), qb = find_quantizers(ref);
  ASSERT_EQ(qa.size(), qb.size());
  for (size_t i = 0; i < qa.size(); ++i)
    EXPECT_TRUE(torch::allclose(qa[i].fq->qparams().scale, qb[i].fq->qparams().scale, 1e-4, 1e-7)) << qa[i].node;
}

// A batch norm channel with gamma = 0 outputs beta whatever the conv does; its
// fold factor would be 0 and transform(W * 0) / 0 NaN. It stays finite, and the
// eval model still equals the folded one.
TEST(QatFoldSimulation, ZeroGammaChannelStaysFinite) {
  const TinyTask& t = tiny();
  GraphModule sim = tiny_unfolded();
  std::string bn;
  for (const auto& [src, b] : plan_bn_folding(sim->graph())) bn = b;
  ASSERT_FALSE(bn.empty());
  {
    torch::NoGradGuard ng;
    sim->node_module(bn).weight[0].fill_(0);
  }
  sim->set_bn_fold_simulation(true);
  attach_quantizers(sim, QuantConfig()
                             .weight(QuantScheme(4).per_channel(true))
                             .activation(QuantScheme(4).is_signed(false).symmetric(false)));
  calibrate(sim, t.train, 2, 128);
  const torch::Tensor x = t.test.images.slice(0, 0, 64);
  sim->train();
  sim->forward(x).square().sum().backward();
  for (const auto& p : sim->named_parameters())
    if (p.value().grad().defined()) EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  torch::NoGradGuard ng;
  sim->eval();
  const torch::Tensor ys = sim->forward(x);
  EXPECT_TRUE(torch::isfinite(ys).all().item<bool>());
  GraphModule folded = fold_batch_norm(sim);
  folded->eval();
  EXPECT_LE((folded->forward(x) - ys).abs().max().item<double>(), 1e-4);
}

// DoReFa's output range is the range of the weight it quantizes, whatever its
// scale: under fold simulation the weight is W * gamma / sqrt(running_var +
// eps), and a range fixed at initialization made the conv output's variance,
// and so the running variance, proportional to the running variance (it
// drifted by 1e22 in 5 epochs of resnet20 W4A4, docs/results.md). The
// training below keeps every running variance within 10x of where it started.
TEST(QatFoldSimulation, DorefaRangeFollowsTheWeightAndRunningVarianceStays) {
  torch::manual_seed(9);
  torch::Tensor w = torch::randn({4, 3, 3, 3}) * 0.3;
  DorefaQuantizerImpl dq(QuantScheme(4).per_channel(true), torch::full({4}, 0.5f), false);
  for (double k : {0.25, 1.0, 4.0}) {
    torch::NoGradGuard ng;
    const torch::Tensor want = (w * k).abs().amax({1, 2, 3});
    EXPECT_TRUE(torch::allclose(dq.forward(w * k).abs().amax({1, 2, 3}), want, 1e-6, 0)) << k;
    EXPECT_TRUE(torch::allclose(dq.to_fake_quant()->qparams().scale * 7, want, 1e-6, 0)) << k;
  }
  const TinyTask& t = tiny();
  for (const char* method : {"dorefa", "pact"}) {
    SCOPED_TRACE(method);
    GraphModule m = calibrated_fold_simulation(4);
    std::map<std::string, torch::Tensor> before;
    for (const auto& it : m->named_buffers())
      if (it.key().find("running_var") != std::string::npos) before[it.key()] = it.value().clone();
    QatOptions o = quick(method, 3);
    o.train().schedule("constant");
    run_qat(m, t.train, nullptr, o);
    for (const auto& it : m->named_buffers()) {
      const std::string& k = it.key();
      if (!before.count(k)) continue;
      const torch::Tensor r = it.value() / before[k];
      EXPECT_LT(r.max().item<float>(), 10.0f) << k;
      EXPECT_GT(r.min().item<float>(), 0.1f) << k;
    }
  }
}

TEST(QatFoldSimulation, TrainsWithBatchStatisticsAndConvertsAfterFolding) {
  const TinyTask& t = tiny();
  GraphModule m = calibrated_fold_simulation(8);
  const torch::Tensor mean0 = m->node_module("bn1").running_mean.clone();
  const torch::Tensor gamma0 = m->node_module("bn1").weight.detach().clone();
  run_qat(m, t.train, nullptr, quick("lsq", 1));
  // The batch norms trained and tracked batch statistics.
  EXPECT_FALSE(torch::equal(m->node_module("bn1").running_mean, mean0));
  EXPECT_FALSE(torch::equal(m->node_module("bn1").weight.detach(), gamma0));
  EXPECT_THROW_MSG(convert_qat_to_fake_quant(m), ValueError, "fold_batch_norm it first");
  EXPECT_THROW_MSG(PtqOptions().bn_fold_simulation(true).adaround(true).validate(), ValueError,
                   "AdaRound and bias correction work on the folded model");
  m->eval();
  torch::Tensor y;
  {
    torch::NoGradGuard ng;
    y = m->forward(t.test.images);
  }
  GraphModule f = fold_batch_norm(m);
  convert_qat_to_fake_quant(f);
  Int8Model q = lower_to_int8(f);
  torch::NoGradGuard ng;
  f->eval();
  const torch::Tensor yf = f->forward(t.test.images);
  EXPECT_LE((yf - y).abs().max().item<double>(), 1e-3 * (1 + y.abs().max().item<double>()));
  // One epoch on synthetic data leaves many near-ties, which 1-step rounding
  // differences of the int8 kernels flip (this run: 97.3 %).
  EXPECT_GE(q.forward(t.test.images).argmax(1).eq(yf.argmax(1)).to(torch::kFloat).mean().item<float>(), 0.95f);
}

// QatOptions::freeze_bn_epoch: from that epoch on the batch norms use their
// running statistics (and keep them) while gamma, beta and the rest train.
TEST(QatFoldSimulation, FrozenBatchNormsKeepTheirStatisticsAndStillTrain) {
  const TinyTask& t = tiny();
  GraphModule m = calibrated_fold_simulation(4);
  // In train mode a frozen batch norm gives what eval mode gives.
  const torch::Tensor x = t.test.images.slice(0, 0, 64);
  torch::Tensor y_eval;
  {
    torch::NoGradGuard ng;
    m->eval();
    y_eval = m->forward(x);
    m->train();
    for (const Node& n : m->graph().nodes())
      if (n.op == OpKind::kBatchNorm) m->node_module(n.name).eval();
    EXPECT_LE((m->forward(x) - y_eval).abs().max().item<double>(), 1e-5);
    m->train();
    EXPECT_GT((m->forward(x) - y_eval).abs().max().item<double>(), 1e-3) << "batch statistics differ";
  }
  const torch::Tensor mean0 = m->node_module("bn1").running_mean.clone();
  const torch::Tensor var0 = m->node_module("bn1").running_var.clone();
  const torch::Tensor gamma0 = m->node_module("bn1").weight.detach().clone();
  run_qat(m, t.train, nullptr, quick("lsq", 1).freeze_bn_epoch(1));
  EXPECT_TRUE(torch::equal(m->node_module("bn1").running_mean, mean0));
  EXPECT_TRUE(torch::equal(m->node_module("bn1").running_var, var0));
  EXPECT_FALSE(torch::equal(m->node_module("bn1").weight.detach(), gamma0)) << "gamma still trains";
  EXPECT_THROW_MSG(quick("lsq", 2).freeze_bn_epoch(3).validate(), ValueError,
                   "freeze_bn_epoch 3 is after the last of the 2 epochs");
  EXPECT_THROW_MSG(quick("lsq", 2).freeze_bn_epoch(-1).validate(), ValueError,
                   "freeze_bn_epoch must be >= 0 (0 = never), got -1");
}

// ---------------------------------------------------------------- errors

TEST(QatErrors, ClearMessages) {
  EXPECT_THROW_MSG(QatOptions().method("binary").validate(), ValueError,
                   "unknown QAT method 'binary' (known: dorefa, pact, lsq, lsq+, apot)");
  EXPECT_THROW_MSG(QatOptions().clip_decay(-1).validate(), ValueError,
                   "clip_decay must be >= 0 and finite, got -1");
  EXPECT_THROW_MSG(QuantScheme(9), ValueError, "bits must be in [2, 8], got 9");
  EXPECT_THROW_MSG(QuantScheme(1), ValueError, "bits must be in [2, 8], got 1");
  EXPECT_THROW_MSG(LsqQuantizerImpl(QuantScheme(8).bits(1), true, torch::ones({1}),
                                    torch::zeros({1}, torch::kInt64)),
                   ValueError, "bits must be in [2, 8], got 1");
  EXPECT_THROW_MSG(ApotQuantizerImpl(QuantScheme(8).bits(12), false, false, 1.0), ValueError,
                   "bits must be in [2, 8], got 12");
  const TinyTask& t = tiny();
  GraphModule plain = t.fp32();
  EXPECT_THROW_MSG(attach_qat_quantizers(plain, QatOptions()), ValueError,
                   "QAT needs a model with calibrated quantizers");
  attach_quantizers(plain, QuantConfig());
  EXPECT_THROW_MSG(attach_qat_quantizers(plain, QatOptions()), ValueError, "was never calibrated");
  EXPECT_THROW_MSG(register_qat_method("lsq", qat_method("lsq")), ValueError,
                   "QAT method 'lsq' is already registered");
  DorefaQuantizerImpl d8(QuantScheme(8), torch::ones({1}), /*paper_grid=*/true);
  EXPECT_THROW_MSG(d8.to_fake_quant(), ValueError, "needs 9-bit codes");
}

}  // namespace
}  // namespace nnopt
