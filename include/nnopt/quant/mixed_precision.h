#pragma once
// Mixed precision: per-layer weight bits chosen under a model-size budget.
//
//   sensitivity:  for every conv2d/linear layer and candidate bit width b,
//                 quantize that layer's weights alone to b bits (the rest
//                 float) and measure the accuracy drop (and loss increase) on
//                 an evaluation set;
//   allocation:   choose one width per layer so that the model size is within
//                 the budget and the summed predicted drop is least - a
//                 multiple-choice knapsack, solved exactly by dynamic
//                 programming over the size in fixed units (budget / 4096).
// The sum of single-layer drops is the usual additive model of the
// interaction between layers (HAWQ, and the ablations of Dong et al. 2019).
#include <torch/arg.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/quant/attach.h"

namespace nnopt {

struct SensitivityOptions {
  /// Candidate weight bit widths (each in [2, 8]); default {2, 4, 8}.
  TORCH_ARG(std::vector<int64_t>, bits) = std::vector<int64_t>{2, 4, 8};
  /// Weight scheme (its bits are replaced by each candidate); default s8 per channel.
  TORCH_ARG(QuantScheme, weight) = QuantScheme(8).per_channel(true);
  /// Evaluation batch size; default 500.
  TORCH_ARG(int64_t, batch_size) = 500;
  /// "accuracy" (drop in top-1, the default) or "loss" (increase of the
  /// cross-entropy) as the predicted cost of a choice.
  TORCH_ARG(std::string, metric) = "accuracy";

 public:
  void validate() const;
};

struct LayerSensitivity {
  std::string node;
  int64_t params = 0;                     ///< weight elements
  std::map<int64_t, double> accuracy_drop;  ///< bits -> fp accuracy - accuracy (fraction)
  std::map<int64_t, double> loss_increase;  ///< bits -> loss - fp loss
};

/// One entry per conv2d/linear layer of `model` (float, no quantizers; the
/// model is left as it was). ValueError for bad options or empty data.
std::vector<LayerSensitivity> weight_sensitivity(GraphModule& model, const Dataset& eval,
                                                 const SensitivityOptions& options = {});

/// Bytes of a model whose conv2d/linear weights take `bits` (by node; a node
/// missing from the map: default_bits), plus 4 bytes per other parameter and
/// per output channel of each quantized layer (its scale). Buffers not counted.
int64_t quantized_size_bytes(const Graph& g, const BitsMap& bits, int64_t default_bits);

struct BitAllocation {
  BitsMap weight_bits;           ///< every conv2d/linear node
  double predicted_drop = 0;     ///< sum of the chosen costs
  int64_t size_bytes = 0;        ///< quantized_size_bytes of the choice
  std::string to_string() const; ///< one line per layer
};

/// Least summed cost within `budget_bytes`. ValueError if even the smallest
/// widths do not fit ("size budget 10 KiB is below the smallest model, 17.2 KiB
/// with every layer at 2 bits"), or for empty sensitivities. `metric` as in
/// SensitivityOptions.
BitAllocation allocate_bits(const Graph& g, const std::vector<LayerSensitivity>& sens,
                            int64_t budget_bytes, const std::string& metric = "accuracy");

}  // namespace nnopt
