#pragma once
// Data-free quantization (Nagel et al. 2019, "Data-Free Quantization Through
// Weight Equalization and Bias Correction"): no data for the weights, and in
// the default mode none at all.
//
//   1. record the batch-norm statistics: the output of a conv followed by BN
//      has per-channel mean beta and std |gamma| (the BN's shift and scale);
//   2. fold batch norm;
//   3. cross-layer equalization (equalize.h), scaling those statistics along;
//   4. optional high-bias absorption (sec. 4.1.?, "absorbing high biases"):
//      for first -> relu -> second, c_i = max(0, beta_i - k * gamma_i) is moved
//      out of first's bias into second's: b1 -= c, b2 += sum_k W2[:, i, k] c_i
//      (exact where relu(x) = relu(x - c) + c, i.e. for x >= c, and away from
//      zero padding);
//   5. attach quantizers, weight ranges from the weights;
//   6. analytic bias correction (sec. 4.2): b -= (Q(W) - W) E[x], with E[x]
//      from the statistics: the expected input of a layer follows from the
//      preceding BN's (beta, gamma) through the clipped-normal mean of the
//      ReLU (appendix: E[clip(z, a, b)] for z ~ N(mu, sigma^2));
//   7. activation ranges: either from the same statistics (data-free:
//      [mu - k sigma, mu + k sigma] per channel, clipped by relu/relu6, union
//      over channels) or calibrated on data (the weights stay data-free).
//
// The statistics are carried through the graph by moment matching: relu /
// relu6 -> clipped-normal moments; add -> sums of means and variances
// (inputs taken as independent); conv / linear without BN -> mean W E[x] + b,
// variance sum W^2 var(x) (independent inputs); average pools, flatten,
// dropout, identity keep them; max_pool, hardswish, concat of unknown parts
// end them. A layer whose input statistics are unknown is not corrected (the
// result lists it).
//
// Example:
//   nnopt::DfqOptions opt;                            // W8A8, everything data-free
//   opt.input_range({-0.81, 2.02});                   // known preprocessing
//   nnopt::DfqResult r = nnopt::run_dfq(fp32, opt);
#include <torch/arg.h>
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/equalize.h"
#include "nnopt/quant/scale_table.h"

namespace nnopt {

/// Per-channel mean and variance of a node's output (float32 [C]; for a
/// flattened [F] output one entry per feature). Undefined when unknown.
struct Moments {
  torch::Tensor mean, var;
  bool known() const { return mean.defined(); }
};
using MomentsMap = std::map<std::string, Moments>;

/// E[clip(z, lo, hi)] and Var[clip(z, lo, hi)] for z ~ N(mean, var), elementwise
/// (lo = -inf / hi = +inf for no clip; relu: lo = 0). var may be 0.
Moments clipped_normal_moments(const Moments& z, double lo, double hi);

/// BN output statistics by conv/linear producer name (for each foldable pair
/// of plan_bn_folding): mean = beta, var = gamma^2. Call on the unfolded model.
MomentsMap bn_output_moments(GraphModule& unfolded);

/// Moments of every node's output of a folded model, seeded by `bn` (outputs
/// of folded conv/linear nodes) and the input's `input` (per input channel).
MomentsMap propagate_moments(GraphModule& folded, const MomentsMap& bn, const Moments& input);

/// Analytic bias correction: for every conv2d/linear node with a quantizing
/// weight FakeQuant, a bias, and known input moments,
///   b <- b - sum_{i,k} (Q(W) - W)[o, i, k] E[x_i].
/// Returns the corrected node names; the others go to `skipped` (with why).
std::vector<std::string> correct_bias_analytic(GraphModule& model, const MomentsMap& moments,
                                               std::vector<std::string>* skipped = nullptr);

struct DfqOptions {
  /// Schemes and where quantizers go; the observers are used for the weights
  /// and (activation_ranges "calibrate") the activations.
  TORCH_ARG(QuantConfig, config) = QuantConfig();
  /// Cross-layer equalization; default true.
  TORCH_ARG(bool, equalize) = true;
  TORCH_ARG(EqualizeOptions, equalize_options) = {};
  /// High-bias absorption; default false. It is exact only away from zero
  /// padding (a large share of positions on 28x28 maps); on the resnet20 of
  /// docs/results.md no channel has beta - 3 gamma > 0, so it changes nothing.
  TORCH_ARG(bool, absorb_high_bias) = false;
  /// k of c = max(0, beta - k gamma); default 3 (the paper's).
  TORCH_ARG(double, absorb_sigmas) = 3;
  /// Analytic bias correction; default true.
  TORCH_ARG(bool, bias_correction) = true;
  /// Weight ranges by MSE search (set_weight_ranges_mse; weights only, so
  /// still data-free) instead of min-max, before the bias correction, which
  /// then corrects the error of these ranges. Default false.
  TORCH_ARG(bool, weight_mse) = false;
  /// "bn": activation ranges from the statistics (data-free); "calibrate":
  /// from data with the activation observer (run_dfq then needs data).
  TORCH_ARG(std::string, activation_ranges) = "bn";
  /// k of the range [mu - k sigma, mu + k sigma]; default 6.
  TORCH_ARG(double, range_sigmas) = 6;
  /// Moments of the (normalized) model input per channel; default N(0, 1).
  TORCH_ARG(double, input_mean) = 0;
  TORCH_ARG(double, input_std) = 1;
  /// Known range of the model input (e.g. from the normalization of pixels in
  /// [0, 1]); empty: input_mean +- range_sigmas * input_std.
  TORCH_ARG(std::vector<double>, input_range) = {};

 public:
  void validate() const;
};

struct DfqResult {
  GraphModule model{nullptr};   ///< folded fake-quant model, eval mode
  ScaleTable table;
  EqualizeResult equalization;  ///< empty plan when equalize is off
  std::vector<std::string> absorbed;    ///< pairs whose high bias was absorbed ("first")
  std::vector<std::string> corrected;   ///< layers with analytic bias correction
  std::vector<std::string> uncorrected; ///< "node: why"
  double seconds = 0;
};

/// Runs steps 1-7 on a copy of `fp32` (unfolded, with its batch norms).
/// `calib` / `calib_batches` are needed only for activation_ranges "calibrate".
/// ValueError for bad options, a model without batch norm (no statistics:
/// "dfq: the model has no conv->batch_norm pairs; nothing to take statistics from"),
/// activation statistics that cannot be derived.
DfqResult run_dfq(GraphModule& fp32, const DfqOptions& options, const Dataset* calib = nullptr,
                  int64_t calib_batches = 8, int64_t batch_size = 64);

}  // namespace nnopt
