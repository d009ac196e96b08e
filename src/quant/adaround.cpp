// AdaRound (Nagel et al. 2020, "Up or Down? Adaptive Rounding for
// Post-Training Quantization"): see quant/adaround.h.
#include "nnopt/quant/adaround.h"

#include <cmath>
#include <random>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/ptq.h"

namespace nnopt {

namespace {
constexpr double kZeta = 1.1, kGamma = -0.1;  // stretch of the rectified sigmoid (paper eq. 23)

std::vector<int64_t> channel_shape(int64_t dim, int64_t axis) {
  std::vector<int64_t> s(dim, 1);
  s[axis] = -1;
  return s;
}

// Squared error summed over the channel axis (1), averaged over the rest.
torch::Tensor recon_loss(const torch::Tensor& y, const torch::Tensor& target) {
  return (y - target).pow(2).sum(1).mean();
}
}  // namespace

void AdaRoundOptions::validate() const {
  NNOPT_CHECK(iterations_ >= 1, ValueError, "adaround: iterations must be >= 1, got ", iterations_);
  NNOPT_CHECK(batch_size_ >= 1, ValueError, "adaround: batch_size must be >= 1, got ", batch_size_);
  NNOPT_CHECK(lr_ > 0, ValueError, "adaround: lr must be > 0, got ", lr_);
  NNOPT_CHECK(reg_weight_ >= 0, ValueError, "adaround: reg_weight must be >= 0, got ", reg_weight_);
  NNOPT_CHECK(beta_start_ >= beta_end_ && beta_end_ > 0, ValueError,
              "adaround: need beta_start >= beta_end > 0, got ", beta_start_, " and ", beta_end_);
  NNOPT_CHECK(warmup_ >= 0 && warmup_ < 1, ValueError, "adaround: warmup must be in [0, 1), got ",
              warmup_);
  NNOPT_CHECK(max_bits_ >= 2 && max_bits_ <= 8, ValueError,
              "adaround: max_bits must be in [2, 8], got ", max_bits_);
}

torch::Tensor adaround_h(const torch::Tensor& v) {
  return (torch::sigmoid(v) * (kZeta - kGamma) + kGamma).clamp(0, 1);
}

std::vector<AdaRoundLayer> adaround(GraphModule& quantized, GraphModule& reference,
                                    const std::vector<torch::Tensor>& batches,
                                    const AdaRoundOptions& opt) {
  opt.validate();
  NNOPT_CHECK(!batches.empty(), ValueError, "adaround: calibration needs at least 1 batch, got 0");
  NNOPT_CHECK(quantized->graph() == reference->graph(), ValueError,
              "adaround: the quantized and the reference model have different graphs");
  const Graph& g = quantized->graph();
  const bool was_training = quantized->is_training();
  quantized->eval();
  reference->eval();
  std::mt19937_64 rng(opt.seed());
  std::vector<AdaRoundLayer> out;

  for (const auto& q : find_quantizers(quantized)) {
    if (!q.weight || !q.fq->quantizing() || q.fq->scheme().bits() > opt.max_bits()) continue;
    const double t0 = now_seconds();
    const Node& n = g.node(q.node);
    auto& m = quantized->node_module(q.node);
    // f: the ReLU / ReLU6 that alone reads the layer, if any.
    auto readers = g.consumers(q.node);
    OpKind act = OpKind::kIdentity;
    std::string target_node = q.node;
    if (readers.size() == 1 && q.node != g.output()) {
      OpKind r = g.node(readers[0]).op;
      if (r == OpKind::kReLU || r == OpKind::kReLU6) {
        act = r;
        target_node = readers[0];
      }
    }
    auto f = [&](const torch::Tensor& y) {
      if (act == OpKind::kReLU) return torch::relu(y);
      if (act == OpKind::kReLU6) return torch::clamp(y, 0, 6);
      return y;
    };
    // x~ from the quantized model (earlier layers already rounded), f(W x) from the float one.
    torch::Tensor xq, target;
    {
      torch::NoGradGuard ng;
      std::vector<torch::Tensor> xs, ts;
      for (const auto& b : batches) {
        TensorMap a, c;
        quantized->forward(b, {n.inputs[0]}, a);
        reference->forward(b, {target_node}, c);
        xs.push_back(a.at(n.inputs[0]).detach().clone());
        ts.push_back(c.at(target_node).detach().clone());
      }
      xq = torch::cat(xs);
      target = torch::cat(ts);
    }
    const int64_t N = xq.size(0);

    const QuantScheme& s = q.fq->scheme();
    QParams qp = q.fq->qparams();
    auto w = m.weight.detach().clone();
    auto bias = m.bias.defined() ? m.bias.detach() : torch::Tensor();
    const auto shape = s.per_channel() ? channel_shape(w.dim(), s.ch_axis())
                                       : std::vector<int64_t>(w.dim(), 1);
    auto scale = qp.scale.reshape(shape);
    auto zp = qp.zero_point.to(torch::kFloat32).reshape(shape);
    const double qmin = s.quant_min(), qmax = s.quant_max();
    auto w_floor = torch::floor(w / scale);
    auto rest = w / scale - w_floor;  // in [0, 1)
    auto quant = [&](const torch::Tensor& h) {
      return scale * (torch::clamp(w_floor + h + zp, qmin, qmax) - zp);
    };
    auto full_loss = [&](const torch::Tensor& wq) {
      torch::NoGradGuard ng;
      double sum = 0;
      for (int64_t i = 0; i < N; i += 256) {
        auto xb = xq.slice(0, i, std::min(N, i + 256));
        auto tb = target.slice(0, i, std::min(N, i + 256));
        sum += recon_loss(f(layer_forward(n, xb, wq, bias)), tb).item<double>() * xb.size(0);
      }
      return sum / N;
    };
    auto nearest_h = (rest >= 0.5).to(torch::kFloat32);

    AdaRoundLayer rep;
    rep.node = q.node;
    rep.bits = s.bits();
    rep.loss_nearest = full_loss(quant(nearest_h));

    // V with h(V) = rest: sigmoid(V) = (rest - gamma) / (zeta - gamma).
    auto p = ((rest - kGamma) / (kZeta - kGamma)).clamp(1e-6, 1 - 1e-6);
    torch::Tensor v = torch::log(p / (1 - p)).detach().requires_grad_(true);
    torch::optim::Adam adam({v}, torch::optim::AdamOptions(opt.lr()));
    const int64_t warm = static_cast<int64_t>(opt.warmup() * opt.iterations());
    const int64_t bs = std::min(opt.batch_size(), N);
    std::uniform_int_distribution<int64_t> pick(0, N - 1);
    for (int64_t it = 0; it < opt.iterations(); ++it) {
      std::vector<int64_t> idx(bs);
      for (auto& k : idx) k = pick(rng);
      auto sel = torch::tensor(idx, torch::kInt64);
      auto xb = xq.index_select(0, sel), tb = target.index_select(0, sel);
      auto h = adaround_h(v);
      auto loss = recon_loss(f(layer_forward(n, xb, quant(h), bias)), tb);
      if (it >= warm && opt.reg_weight() > 0) {
        // beta decays linearly from beta_start to beta_end after the warm-up.
        const double rel = static_cast<double>(it - warm) / std::max<int64_t>(1, opt.iterations() - warm);
        const double beta = opt.beta_end() + (opt.beta_start() - opt.beta_end()) * (1 - rel);
        auto reg = (1 - (2 * h - 1).abs().pow(beta)).sum();
        loss = loss + opt.reg_weight() * reg;
      }
      adam.zero_grad();
      loss.backward();
      adam.step();
    }
    torch::NoGradGuard ng;
    auto hard = (v.detach() >= 0).to(torch::kFloat32);
    auto wq = quant(hard);
    rep.loss_adaround = full_loss(wq);
    rep.flipped = (hard != nearest_h).to(torch::kFloat64).mean().item<double>();
    m.weight.copy_(wq);  // on the grid: the FakeQuant reproduces it exactly
    rep.seconds = now_seconds() - t0;
    out.push_back(rep);
  }
  quantized->train(was_training);
  return out;
}

}  // namespace nnopt
