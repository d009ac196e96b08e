// Empirical bias correction (Nagel et al. 2019 sec. 4.2; Finkelstein et al.
// 2019): see quant/bias_correction.h.
#include "nnopt/quant/bias_correction.h"

#include "nnopt/core/error.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/ptq.h"

namespace nnopt {

void BiasCorrectionOptions::validate() const {
  NNOPT_CHECK(max_bits_ >= 2 && max_bits_ <= 8, ValueError,
              "bias correction: max_bits must be in [2, 8], got ", max_bits_);
}

std::vector<BiasShift> correct_bias_empirical(GraphModule& model,
                                              const std::vector<torch::Tensor>& batches,
                                              const BiasCorrectionOptions& opt) {
  opt.validate();
  NNOPT_CHECK(!batches.empty(), ValueError, "calibration needs at least 1 batch, got 0");
  const Graph& g = model->graph();
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard ng;

  std::vector<BiasShift> out;
  bool any = false;
  for (const auto& q : find_quantizers(model)) {
    if (!q.weight || !q.fq->quantizing() || q.fq->scheme().bits() > opt.max_bits()) continue;
    any = true;
    auto& m = model->node_module(q.node);
    if (!m.bias.defined()) continue;
    const Node& n = g.node(q.node);
    const std::string& in = n.inputs[0];
    auto dw = m.weight - q.fq->forward(m.weight);  // W - Q(W)
    torch::Tensor sum;
    int64_t count = 0;
    for (const auto& b : batches) {
      TensorMap taps;
      model->forward(b, {in}, taps);  // x~: the layer input in the quantized model
      auto e = layer_forward(n, taps.at(in), dw, torch::Tensor());  // (W - Q(W)) x
      // mean over every axis but the channel axis (1)
      auto s = e.sum(dims_except(e.dim(), 1));
      sum = sum.defined() ? sum + s : s;
      count += e.numel() / e.size(1);
    }
    auto delta = sum / static_cast<double>(count);  // E[W x] - E[Q(W) x], [C_out]
    m.bias.add_(delta);
    out.push_back({q.node, delta.abs().mean().item<double>(), delta.abs().max().item<double>()});
  }
  model->train(was_training);
  NNOPT_CHECK(any, ValueError, "bias correction: the model has no calibrated weight quantizers");
  return out;
}

}  // namespace nnopt
