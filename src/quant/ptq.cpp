// Post-training quantization pipeline and the building blocks the PTQ
// algorithms share (see quant/ptq.h).
#include "nnopt/quant/ptq.h"

#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/quant/fake_quant.h"

namespace nnopt {

void PtqOptions::validate() const {
  config_.validate();
  NNOPT_CHECK(calib_batches_ >= 1, ValueError, "calibration needs at least 1 batch, got ",
              calib_batches_);
  NNOPT_CHECK(batch_size_ >= 1, ValueError, "ptq: batch_size must be >= 1, got ", batch_size_);
  bias_correction_options_.validate();
  adaround_options_.validate();
  NNOPT_CHECK(!(adaround_ && bias_correction_), ValueError,
              "ptq: adaround and bias_correction together: AdaRound already reconstructs each "
              "layer's output (choose one)");
  NNOPT_CHECK(!bn_fold_simulation_ || !(adaround_ || bias_correction_), ValueError,
              "ptq: bn_fold_simulation is the QAT start; AdaRound and bias correction work on the folded "
              "model (leave bn_fold_simulation off)");
}

GraphModule clone_plain(GraphModule& model) {
  for (const Node& n : model->graph().nodes()) {
    auto& m = model->node_module(n.name);
    NNOPT_CHECK(!m.weight_transform && !m.act_transform, ValueError, "node '", n.name,
                "' carries a transform; quantize a plain float model");
  }
  GraphModule out(model->graph());
  out->load_state(model->state(), true);
  // load_state copies into out's own tensors, so the two models share nothing.
  out->eval();
  return out;
}

std::vector<torch::Tensor> take_batches(const Dataset& data, int64_t num_batches,
                                        int64_t batch_size) {
  NNOPT_CHECK(num_batches >= 1, ValueError, "calibration needs at least 1 batch, got ",
              num_batches);
  NNOPT_CHECK(batch_size >= 1, ValueError, "calibration batch_size must be >= 1, got ",
              batch_size);
  NNOPT_CHECK(data.size() > 0, ValueError, "calibration data '", data.name, "' is empty");
  std::vector<torch::Tensor> out;
  for (int64_t b = 0; b < num_batches; ++b) {
    const int64_t begin = b * batch_size;
    if (begin >= data.size()) break;
    out.push_back(data.images.slice(0, begin, std::min(begin + batch_size, data.size())));
  }
  return out;
}

torch::Tensor layer_forward(const Node& n, const torch::Tensor& x, const torch::Tensor& weight,
                            const torch::Tensor& bias) {
  if (n.op == OpKind::kLinear) return at::linear(x, weight, bias);
  NNOPT_CHECK(n.op == OpKind::kConv2d, ValueError, "node '", n.name, "' (", op_name(n.op),
              ") is not a conv2d/linear layer");
  const auto& a = n.as<Conv2dAttrs>();
  return at::conv2d(x, weight, bias, {a.stride[0], a.stride[1]}, {a.padding[0], a.padding[1]},
                    {a.dilation[0], a.dilation[1]}, a.groups);
}

std::vector<std::string> layer_nodes(const Graph& g) {
  std::vector<std::string> out;
  for (const Node& n : g.nodes())
    if (n.op == OpKind::kConv2d || n.op == OpKind::kLinear) out.push_back(n.name);
  return out;
}

void calibrate_weights(GraphModule& model) {
  torch::NoGradGuard ng;
  for (const auto& q : find_quantizers(model)) {
    if (!q.weight) continue;
    NNOPT_CHECK(q.fq->observer() != nullptr, ValueError, "the weight quantizer of '", q.node,
                "' has no observer");
    q.fq->set_observing(false);
    q.fq->observer()->reset();
    q.fq->observer()->observe(model->weight_transform_input(q.node).detach());
    q.fq->update_qparams();
    q.fq->set_quantizing(true);
  }
}

void set_weight_ranges_mse(GraphModule& model, int64_t grid) {
  NNOPT_CHECK(grid >= 1, ValueError, "weight MSE grid must be >= 1, got ", grid);
  torch::NoGradGuard ng;
  for (const auto& q : find_quantizers(model)) {
    if (!q.weight) continue;
    const QuantScheme& s = q.fq->scheme();
    NNOPT_CHECK(s.symmetric(), ValueError, "weight MSE ranges: node '", q.node, "' has a ",
                s.describe(), " weight scheme; symmetric schemes only");
    auto w = model->weight_transform_input(q.node).detach().to(torch::kFloat32);
    // [C, K]: rows are the channels (one row for per-tensor schemes).
    torch::Tensor rows = s.per_channel() ? w.movedim(s.ch_axis(), 0).reshape({w.size(s.ch_axis()), -1})
                                         : w.reshape({1, -1});
    auto amax = rows.abs().amax(1);  // [C]
    torch::Tensor best_err = torch::full_like(amax, std::numeric_limits<float>::infinity());
    torch::Tensor best_t = amax.clone();
    for (int64_t k = grid; k >= 1; --k) {
      auto t = amax * (static_cast<double>(k) / grid);
      QParams qp = s.per_channel() ? s.qparams(-t, t) : s.qparams(-t.max(), t.max());
      auto scale = qp.scale.reshape({-1, 1});
      auto zp = qp.zero_point.to(torch::kFloat32).reshape({-1, 1});
      auto qv = (at::round(rows / scale) + zp).clamp(s.quant_min(), s.quant_max());
      auto err = ((qv - zp) * scale - rows).pow(2).sum(1);  // [C]
      if (!s.per_channel()) err = err.sum().reshape({1});
      auto better = err < best_err;  // ties keep the larger range (visited first)
      best_err = torch::where(better, err, best_err);
      best_t = torch::where(better, t.expand_as(best_t), best_t);
    }
    QParams qp = s.per_channel() ? s.qparams(-best_t, best_t) : s.qparams(-best_t, best_t);
    q.fq->set_observing(false);
    q.fq->set_qparams(qp);
    q.fq->set_quantizing(true);
  }
}

void save_quantized_model(const std::string& path, GraphModule& model,
                          const std::string& meta_json) {
  nlohmann::json meta = nlohmann::json::parse(meta_json, nullptr, false);
  NNOPT_CHECK(meta.is_object(), ValueError, "save_quantized_model: metadata must be a JSON object");
  NNOPT_CHECK(!find_quantizers(model).empty(), ValueError,
              "save_quantized_model: the model has no quantizers");
  meta["scale_table"] = nlohmann::json::parse(export_scale_table(model).to_json(-1));
  save_model(path, model, meta.dump());
}

PtqResult run_ptq(GraphModule& fp32, const Dataset& calib, const PtqOptions& opt) {
  opt.validate();
  const double t0 = now_seconds();
  auto batches = take_batches(calib, opt.calib_batches(), opt.batch_size());
  GraphModule base = clone_plain(fp32);
  GraphModule model = opt.fold_bn() && !opt.bn_fold_simulation() ? fold_batch_norm(base) : base;
  model->set_bn_fold_simulation(opt.bn_fold_simulation());
  model->eval();
  GraphModule reference = opt.adaround() ? clone_plain(model) : GraphModule(nullptr);

  attach_quantizers(model, opt.config());
  calibrate(model, batches);
  if (opt.weight_mse() || opt.adaround()) set_weight_ranges_mse(model);

  PtqResult r;
  if (opt.adaround()) r.adaround = adaround(model, reference, batches, opt.adaround_options());
  if (opt.bias_correction())
    r.bias_shifts = correct_bias_empirical(model, batches, opt.bias_correction_options());
  model->eval();
  r.table = export_scale_table(model);
  r.model = model;
  r.seconds = now_seconds() - t0;
  return r;
}

}  // namespace nnopt
