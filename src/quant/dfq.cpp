// Data-free quantization (Nagel et al. 2019): statistics from batch norm,
// moment propagation, analytic bias correction, high-bias absorption and the
// whole pipeline. See quant/dfq.h.
#include "nnopt/quant/dfq.h"

#include <cmath>
#include <limits>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/quant/fake_quant.h"
#include "nnopt/quant/ptq.h"

namespace nnopt {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

torch::Tensor std_normal_cdf(const torch::Tensor& x) { return 0.5 * torch::erfc(-x / std::sqrt(2.0)); }
torch::Tensor std_normal_pdf(const torch::Tensor& x) {
  return torch::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
}

bool depthwise(const Node& n) {
  return n.op == OpKind::kConv2d && n.as<Conv2dAttrs>().groups > 1 &&
         n.as<Conv2dAttrs>().groups == n.as<Conv2dAttrs>().in_channels;
}
bool grouped(const Node& n) {
  return n.op == OpKind::kConv2d && n.as<Conv2dAttrs>().groups > 1 && !depthwise(n);
}

// sum_{i,k} w[o, i, k] v_i for a conv2d/linear weight: [O] (v: [I]).
// Depthwise: w[o, 0, k] v_o. Grouped convolutions: not handled (caller checks).
torch::Tensor weight_times(const Node& n, const torch::Tensor& w, const torch::Tensor& v) {
  if (n.op == OpKind::kLinear) return at::mv(w, v);
  if (depthwise(n)) return w.sum({1, 2, 3}) * v;
  return at::mv(w.sum({2, 3}), v);
}
// Number of input channels a layer reads (the size of its input moments).
int64_t in_channels(const Node& n) {
  return n.op == OpKind::kLinear ? n.as<LinearAttrs>().in_features : n.as<Conv2dAttrs>().in_channels;
}

}  // namespace

Moments clipped_normal_moments(const Moments& z, double lo, double hi) {
  NNOPT_CHECK(z.known(), ValueError, "clipped_normal_moments: unknown input moments");
  NNOPT_CHECK(lo < hi, ValueError, "clipped_normal_moments: lo ", lo, " must be < hi ", hi);
  auto mu = z.mean.to(torch::kFloat64);
  auto sd = z.var.to(torch::kFloat64).clamp_min(0).sqrt();
  auto sds = sd.clamp_min(1e-12);
  auto zero = torch::zeros_like(mu);
  // a = (lo - mu) / sigma, b = (hi - mu) / sigma
  torch::Tensor cdf_a = zero, pdf_a = zero, a_pdf_a = zero, cdf_b = torch::ones_like(mu),
                pdf_b = zero, b_pdf_b = zero;
  if (std::isfinite(lo)) {
    auto a = (lo - mu) / sds;
    cdf_a = std_normal_cdf(a);
    pdf_a = std_normal_pdf(a);
    a_pdf_a = a * pdf_a;
  }
  if (std::isfinite(hi)) {
    auto b = (hi - mu) / sds;
    cdf_b = std_normal_cdf(b);
    pdf_b = std_normal_pdf(b);
    b_pdf_b = b * pdf_b;
  }
  auto mass = cdf_b - cdf_a;
  const double lo_v = std::isfinite(lo) ? lo : 0, hi_v = std::isfinite(hi) ? hi : 0;
  // E[clip] = lo P(z < lo) + hi P(z > hi) + E[z; lo < z < hi]
  auto mean = lo_v * cdf_a + hi_v * (1 - cdf_b) + mu * mass + sds * (pdf_a - pdf_b);
  auto m2 = lo_v * lo_v * cdf_a + hi_v * hi_v * (1 - cdf_b) + mu * mu * mass +
            2 * mu * sds * (pdf_a - pdf_b) + sds * sds * (mass + a_pdf_a - b_pdf_b);
  auto var = (m2 - mean * mean).clamp_min(0);
  // sigma = 0: a point mass at clamp(mu).
  auto point = sd <= 1e-12;
  mean = torch::where(point, mu.clamp(lo, hi), mean);
  var = torch::where(point, zero, var);
  return {mean.to(torch::kFloat32), var.to(torch::kFloat32)};
}

MomentsMap bn_output_moments(GraphModule& unfolded) {
  torch::NoGradGuard ng;
  const Graph& g = unfolded->graph();
  MomentsMap out;
  for (const auto& [src, bn] : plan_bn_folding(g)) {
    auto& b = unfolded->node_module(bn);
    const double eps = g.node(bn).as<BatchNormAttrs>().eps;
    auto rv = b.running_var.detach();
    auto gamma = b.weight.defined() ? b.weight.detach() : torch::ones_like(rv);
    auto beta = b.bias.defined() ? b.bias.detach() : torch::zeros_like(rv);
    // y = gamma (x - m) / sqrt(v + eps) + beta: mean beta, variance gamma^2 v / (v + eps).
    out[src] = {beta.clone().to(torch::kFloat32),
                (gamma * gamma * rv / (rv + eps)).to(torch::kFloat32)};
  }
  return out;
}

MomentsMap propagate_moments(GraphModule& model, const MomentsMap& bn, const Moments& input) {
  torch::NoGradGuard ng;
  const Graph& g = model->graph();
  MomentsMap mom;
  auto get = [&](const std::string& name) -> Moments {
    auto it = mom.find(name);
    return it == mom.end() ? Moments{} : it->second;
  };
  for (const Node& n : g.nodes()) {
    Moments in = n.inputs.empty() ? Moments{} : get(n.inputs[0]);
    Moments y;
    switch (n.op) {
      case OpKind::kInput:
        y = input;
        break;
      case OpKind::kConv2d:
      case OpKind::kLinear: {
        auto it = bn.find(n.name);
        if (it != bn.end()) {
          y = it->second;
        } else if (in.known() && !grouped(n) && in.mean.size(0) == in_channels(n)) {
          auto& m = model->node_module(n.name);
          auto w = m.weight.detach();
          y.mean = weight_times(n, w, in.mean);
          if (m.bias.defined()) y.mean = y.mean + m.bias.detach();
          y.var = weight_times(n, w * w, in.var);  // inputs taken as independent
        }
        break;
      }
      case OpKind::kBatchNorm:
        if (in.known()) {
          auto& b = model->node_module(n.name);
          const double eps = n.as<BatchNormAttrs>().eps;
          auto inv = torch::rsqrt(b.running_var + eps);
          auto gamma = b.weight.defined() ? b.weight.detach() : torch::ones_like(inv);
          auto beta = b.bias.defined() ? b.bias.detach() : torch::zeros_like(inv);
          y.mean = gamma * (in.mean - b.running_mean) * inv + beta;
          y.var = gamma * gamma * in.var * inv * inv;
        }
        break;
      case OpKind::kReLU:
        if (in.known()) y = clipped_normal_moments(in, 0, kInf);
        break;
      case OpKind::kReLU6:
        if (in.known()) y = clipped_normal_moments(in, 0, 6);
        break;
      case OpKind::kAdd: {
        bool all = true;
        for (const auto& i : n.inputs) all = all && get(i).known();
        if (all) {
          y.mean = torch::zeros_like(in.mean);
          y.var = torch::zeros_like(in.var);
          for (const auto& i : n.inputs) {  // inputs taken as independent
            y.mean = y.mean + get(i).mean;
            y.var = y.var + get(i).var;
          }
        }
        break;
      }
      case OpKind::kConcat: {
        bool all = n.as<ConcatAttrs>().dim == 1;
        for (const auto& i : n.inputs) all = all && get(i).known();
        if (all) {
          std::vector<torch::Tensor> ms, vs;
          for (const auto& i : n.inputs) {
            ms.push_back(get(i).mean);
            vs.push_back(get(i).var);
          }
          y = {torch::cat(ms), torch::cat(vs)};
        }
        break;
      }
      case OpKind::kFlatten: {
        const auto& ishape = g.node(n.inputs[0]).shape;
        if (in.known() && n.as<FlattenAttrs>().start_dim == 1 && ishape.size() >= 1) {
          int64_t per = 1;
          for (size_t d = 1; d < ishape.size(); ++d) per *= ishape[d];
          y = {in.mean.repeat_interleave(per), in.var.repeat_interleave(per)};
        }
        break;
      }
      // Averages keep the mean; their variance is at most the input's (kept as a bound).
      case OpKind::kAvgPool:
      case OpKind::kGlobalAvgPool:
      case OpKind::kDropout:
      case OpKind::kIdentity:
        y = in;
        break;
      default:  // max_pool, hardswish: not modelled
        break;
    }
    if (y.known()) mom[n.name] = y;
  }
  return mom;
}

std::vector<std::string> correct_bias_analytic(GraphModule& model, const MomentsMap& moments,
                                               std::vector<std::string>* skipped) {
  torch::NoGradGuard ng;
  const Graph& g = model->graph();
  std::vector<std::string> done;
  auto skip = [&](const std::string& s) {
    if (skipped) skipped->push_back(s);
  };
  for (const auto& q : find_quantizers(model)) {
    if (!q.weight || !q.fq->quantizing()) continue;
    const Node& n = g.node(q.node);
    auto& m = model->node_module(q.node);
    if (!m.bias.defined()) {
      skip(q.node + ": no bias");
      continue;
    }
    if (grouped(n)) {
      skip(q.node + ": grouped convolution");
      continue;
    }
    auto it = moments.find(n.inputs[0]);
    if (it == moments.end() || !it->second.known() || it->second.mean.size(0) != in_channels(n)) {
      skip(str_cat(q.node, ": no statistics for its input '", n.inputs[0], "'"));
      continue;
    }
    auto eps = q.fq->forward(m.weight) - m.weight;  // Q(W) - W
    m.bias.sub_(weight_times(n, eps, it->second.mean));
    done.push_back(q.node);
  }
  return done;
}

void DfqOptions::validate() const {
  config_.validate();
  equalize_options_.validate();
  NNOPT_CHECK(absorb_sigmas_ >= 0, ValueError, "dfq: absorb_sigmas must be >= 0, got ",
              absorb_sigmas_);
  NNOPT_CHECK(activation_ranges_ == "bn" || activation_ranges_ == "calibrate", ValueError,
              "dfq: activation_ranges must be 'bn' or 'calibrate', got '", activation_ranges_, "'");
  NNOPT_CHECK(range_sigmas_ > 0, ValueError, "dfq: range_sigmas must be > 0, got ", range_sigmas_);
  NNOPT_CHECK(input_std_ > 0, ValueError, "dfq: input_std must be > 0, got ", input_std_);
  NNOPT_CHECK(input_range_.empty() || (input_range_.size() == 2 && input_range_[0] < input_range_[1]),
              ValueError, "dfq: input_range must be empty or {lo, hi} with lo < hi");
}

DfqResult run_dfq(GraphModule& fp32, const DfqOptions& opt, const Dataset* calib,
                  int64_t calib_batches, int64_t batch_size) {
  opt.validate();
  const bool use_data = opt.activation_ranges() == "calibrate";
  std::vector<torch::Tensor> batches;
  if (use_data) {
    NNOPT_CHECK(calib != nullptr, ValueError,
                "dfq: activation_ranges 'calibrate' needs calibration data");
    batches = take_batches(*calib, calib_batches, batch_size);
  }
  const double t0 = now_seconds();
  DfqResult r;
  GraphModule base = clone_plain(fp32);
  MomentsMap bn = bn_output_moments(base);
  NNOPT_CHECK(!bn.empty(), ValueError,
              "dfq: the model has no conv->batch_norm pairs; nothing to take statistics from");
  GraphModule model = fold_batch_norm(base);
  model->eval();
  const Graph& g = model->graph();
  torch::NoGradGuard ng;

  if (opt.equalize()) {
    r.equalization = equalize_cross_layer(model, opt.equalize_options());
    for (const auto& [first, s] : r.equalization.scales) {
      auto it = bn.find(first);
      if (it == bn.end()) continue;
      it->second.mean = it->second.mean / s;  // channel i was divided by s_i
      it->second.var = it->second.var / (s * s);
    }
  }
  if (opt.absorb_high_bias()) {
    const EqualizationPlan plan = opt.equalize() ? r.equalization.plan : plan_equalization(g);
    for (const auto& p : plan.pairs) {
      auto it = bn.find(p.first);
      auto& m1 = model->node_module(p.first);
      auto& m2 = model->node_module(p.second);
      if (p.act.empty() || it == bn.end() || !m1.bias.defined() || !m2.bias.defined()) continue;
      // c_i = max(0, beta_i - k gamma_i): relu(x - c) + c = relu(x) where x >= c.
      auto c = (it->second.mean - opt.absorb_sigmas() * it->second.var.sqrt()).clamp_min(0);
      if (c.max().item<double>() <= 0) continue;
      m1.bias.sub_(c);
      m2.bias.add_(weight_times(g.node(p.second), m2.weight, c));
      it->second.mean = it->second.mean - c;
      r.absorbed.push_back(p.first);
    }
  }

  const int64_t in_c = g.input_shape()[0];
  Moments input{torch::full({in_c}, opt.input_mean(), torch::kFloat32),
                torch::full({in_c}, opt.input_std() * opt.input_std(), torch::kFloat32)};
  MomentsMap mom = propagate_moments(model, bn, input);

  attach_quantizers(model, opt.config());
  calibrate_weights(model);
  if (opt.weight_mse()) set_weight_ranges_mse(model);
  if (opt.bias_correction()) r.corrected = correct_bias_analytic(model, mom, &r.uncorrected);

  if (use_data) {
    calibrate(model, batches);  // weights give the same qparams again; activations from data
    if (opt.weight_mse()) set_weight_ranges_mse(model);  // the same search on the same weights
  } else {
    const double k = opt.range_sigmas();
    std::map<std::string, FakeQuantPtr> leaders;
    auto qs = find_quantizers(model);
    for (const auto& q : qs) {
      if (q.weight || !q.fq->follows().empty()) continue;
      const Node& n = g.node(q.node);
      double lo, hi;
      if (n.op == OpKind::kInput && !opt.input_range().empty()) {
        lo = opt.input_range()[0];
        hi = opt.input_range()[1];
      } else {
        const bool clip = n.op == OpKind::kReLU || n.op == OpKind::kReLU6;
        auto it = mom.find(clip ? n.inputs[0] : n.name);  // relu: the Gaussian before the clip
        NNOPT_CHECK(it != mom.end(), ValueError, "dfq: no statistics for the activation of '",
                    q.node, "' (", op_name(n.op),
                    "); use activation_ranges 'calibrate' (--dfq-act calibrate)");
        auto sd = it->second.var.sqrt();
        lo = (it->second.mean - k * sd).min().item<double>();
        hi = (it->second.mean + k * sd).max().item<double>();
        if (clip) {
          lo = 0;
          hi = std::max(hi, 1e-6);
          if (n.op == OpKind::kReLU6) hi = std::min(hi, 6.0);
        }
      }
      const auto& s = q.fq->scheme();
      q.fq->set_observing(false);
      q.fq->set_qparams(s.qparams(torch::tensor({static_cast<float>(lo)}),
                                  torch::tensor({static_cast<float>(hi)})));
      q.fq->set_quantizing(true);
      leaders[q.node] = q.fq;
    }
    for (const auto& q : qs) {
      if (q.weight || q.fq->follows().empty()) continue;
      auto it = leaders.find(q.fq->follows());
      NNOPT_CHECK(it != leaders.end(), ValueError, "dfq: '", q.node, "' follows '",
                  q.fq->follows(), "', which has no activation quantizer");
      q.fq->set_observing(false);
      q.fq->set_qparams(it->second->qparams());
      q.fq->set_quantizing(true);
    }
  }
  model->eval();
  r.table = export_scale_table(model);
  r.model = model;
  r.seconds = now_seconds() - t0;
  return r;
}

}  // namespace nnopt
