// Mixed precision: per-layer sensitivity and a size-constrained bit
// allocation (multiple-choice knapsack by dynamic programming). See
// quant/mixed_precision.h.
#include "nnopt/quant/mixed_precision.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "nnopt/core/error.h"
#include "nnopt/core/table.h"
#include "nnopt/quant/fake_quant.h"
#include "nnopt/quant/ptq.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

void SensitivityOptions::validate() const {
  NNOPT_CHECK(!bits_.empty(), ValueError, "sensitivity: bits must not be empty");
  for (auto b : bits_)
    NNOPT_CHECK(b >= 2 && b <= 8, ValueError, "sensitivity: bits must be in [2, 8], got ", b);
  weight_.validate();
  NNOPT_CHECK(batch_size_ >= 1, ValueError, "sensitivity: batch_size must be >= 1, got ",
              batch_size_);
  NNOPT_CHECK(metric_ == "accuracy" || metric_ == "loss", ValueError,
              "sensitivity: metric must be 'accuracy' or 'loss', got '", metric_, "'");
}

std::vector<LayerSensitivity> weight_sensitivity(GraphModule& model, const Dataset& eval,
                                                 const SensitivityOptions& opt) {
  opt.validate();
  NNOPT_CHECK(eval.size() > 0, ValueError, "sensitivity: evaluation data '", eval.name, "' is empty");
  const EvalResult base = evaluate(model, eval, opt.batch_size());
  std::vector<LayerSensitivity> out;
  for (const auto& name : layer_nodes(model->graph())) {
    auto& m = model->node_module(name);
    NNOPT_CHECK(!m.weight_transform, ValueError, "sensitivity: node '", name,
                "' already carries a weight transform; start from a float model");
    LayerSensitivity ls;
    ls.node = name;
    ls.params = m.weight.numel();
    for (int64_t b : opt.bits()) {
      QuantScheme s = opt.weight();
      s.bits(b);
      const int64_t channels = s.per_channel() ? m.weight.size(s.ch_axis()) : 1;
      auto fq = std::make_shared<FakeQuantImpl>(s, make_observer("minmax", s), channels);
      {
        torch::NoGradGuard ng;
        fq->observer()->observe(m.weight);
        fq->update_qparams();
      }
      fq->set_quantizing(true);
      model->set_weight_transform(name, fq);
      EvalResult r;
      try {
        r = evaluate(model, eval, opt.batch_size());
      } catch (...) {
        model->set_weight_transform(name, nullptr);
        throw;
      }
      model->set_weight_transform(name, nullptr);
      ls.accuracy_drop[b] = base.accuracy - r.accuracy;
      ls.loss_increase[b] = r.loss - base.loss;
    }
    out.push_back(ls);
  }
  return out;
}

int64_t quantized_size_bytes(const Graph& g, const BitsMap& bits, int64_t default_bits) {
  int64_t total_bits = 0;
  for (const Node& n : g.nodes()) {
    const int64_t params = node_params(n);
    if (n.op == OpKind::kConv2d || n.op == OpKind::kLinear) {
      int64_t out_c, wnum;
      bool has_bias;
      if (n.op == OpKind::kConv2d) {
        const auto& a = n.as<Conv2dAttrs>();
        out_c = a.out_channels;
        wnum = a.out_channels * (a.in_channels / a.groups) * a.kernel[0] * a.kernel[1];
        has_bias = a.bias;
      } else {
        const auto& a = n.as<LinearAttrs>();
        out_c = a.out_features;
        wnum = a.out_features * a.in_features;
        has_bias = a.bias;
      }
      auto it = bits.find(n.name);
      const int64_t b = it == bits.end() ? default_bits : it->second;
      total_bits += wnum * b + 32 * out_c /* scales */ + (has_bias ? 32 * out_c : 0);
    } else {
      total_bits += 32 * params;
    }
  }
  return (total_bits + 7) / 8;
}

std::string BitAllocation::to_string() const {
  Table t({"layer", "weight bits"});
  for (const auto& [n, b] : weight_bits) t.add_row({n, std::to_string(b)});
  return t.to_text() + str_cat("size ", fmt(size_bytes / 1024.0, 1), " KiB, predicted drop ",
                               fmt(predicted_drop, 4), "\n");
}

BitAllocation allocate_bits(const Graph& g, const std::vector<LayerSensitivity>& sens,
                            int64_t budget_bytes, const std::string& metric) {
  NNOPT_CHECK(!sens.empty(), ValueError, "bit allocation: no layer sensitivities");
  NNOPT_CHECK(metric == "accuracy" || metric == "loss", ValueError,
              "bit allocation: metric must be 'accuracy' or 'loss', got '", metric, "'");
  NNOPT_CHECK(budget_bytes > 0, ValueError, "bit allocation: size budget must be > 0 bytes, got ",
              budget_bytes);
  // Fixed part: everything but the weights of the layers being allocated.
  BitsMap zero;
  for (const auto& s : sens) zero[s.node] = 0;
  const int64_t fixed_bits = quantized_size_bytes(g, zero, 0) * 8;
  BitsMap smallest;
  for (const auto& s : sens) {
    NNOPT_CHECK(!s.accuracy_drop.empty(), ValueError, "bit allocation: layer '", s.node,
                "' has no measured bit widths");
    smallest[s.node] = s.accuracy_drop.begin()->first;
  }
  const int64_t min_bytes = quantized_size_bytes(g, smallest, 8);
  NNOPT_CHECK(min_bytes <= budget_bytes, ValueError, "size budget ", fmt(budget_bytes / 1024.0, 1),
              " KiB is below the smallest model, ", fmt(min_bytes / 1024.0, 1),
              " KiB with every layer at its fewest bits");
  // Capacity in units of `unit` bits; item sizes are rounded up, so a found
  // choice always fits the budget.
  const int64_t cap_bits = budget_bytes * 8 - fixed_bits;
  const int64_t unit = std::max<int64_t>(1, cap_bits / 4096);
  const int64_t cap = cap_bits / unit;
  const double inf = std::numeric_limits<double>::infinity();
  const size_t L = sens.size();
  // best[l][c]: least cost of layers 0..l-1 using exactly <= c units; choice kept for backtracking.
  std::vector<std::vector<double>> best(L + 1, std::vector<double>(cap + 1, inf));
  std::vector<std::vector<int64_t>> choice(L + 1, std::vector<int64_t>(cap + 1, -1));
  std::fill(best[0].begin(), best[0].end(), 0.0);
  for (size_t l = 0; l < L; ++l) {
    const auto& costs = metric == "accuracy" ? sens[l].accuracy_drop : sens[l].loss_increase;
    for (const auto& [b, cost] : costs) {
      const int64_t need = (sens[l].params * b + unit - 1) / unit;
      for (int64_t c = need; c <= cap; ++c) {
        if (best[l][c - need] == inf) continue;
        const double v = best[l][c - need] + cost;
        if (v < best[l + 1][c] - 1e-12 ||
            (std::abs(v - best[l + 1][c]) <= 1e-12 && b > choice[l + 1][c])) {
          best[l + 1][c] = v;
          choice[l + 1][c] = b;
        }
      }
    }
  }
  NNOPT_CHECK(best[L][cap] < inf, ValueError, "size budget ", fmt(budget_bytes / 1024.0, 1),
              " KiB cannot be met at the resolution of the allocation");
  BitAllocation a;
  a.predicted_drop = best[L][cap];
  int64_t c = cap;
  for (size_t l = L; l-- > 0;) {
    const int64_t b = choice[l + 1][c];
    a.weight_bits[sens[l].node] = b;
    c -= (sens[l].params * b + unit - 1) / unit;
  }
  a.size_bytes = quantized_size_bytes(g, a.weight_bits, 8);
  return a;
}

}  // namespace nnopt
