#pragma once
// quantize_with_method: one quantization method, by name, from an fp32
// checkpoint to a fake-quant model. The dispatch that `nnopt quantize` and
// `nnopt compare quant` share:
//
//   method                     what runs
//   minmax, percentile, mse,   run_ptq (ptq.h) with that activation observer;
//   kl                         mse also sets the weight ranges by MSE search
//   dfq                        run_dfq (dfq.h): equalization + analytic bias
//                              correction, activation ranges from BN statistics
//                              (data-free) or calibrated
//   adaround                   run_ptq with AdaRound on layers with <= 4 weight bits
//   dorefa, pact, lsq, lsq+,   run_ptq (calibrated start, activation observer
//   apot                       `act_observer`), then run_qat (qat.h) with the
//                              method's learnable quantizers; uniform methods
//                              are converted back to FakeQuants afterwards
//
// Example:
//   auto o = nnopt::QuantizeMethodOptions().method("lsq").wbits(4).abits(4)
//                .per_channel(true).first_last_bits(8);
//   o.train().epochs(3).lr(0.01).out_dir("out/qat");
//   nnopt::QuantizeOutcome r = nnopt::quantize_with_method(fp32, train, &test, o);
//   // r.model: folded fake-quant model, eval mode; r.report: method details
#include <torch/arg.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/quant/attach.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

/// minmax, percentile, mse, kl, dfq, adaround (no training).
const std::vector<std::string>& ptq_method_names();
/// Every method: the PTQ ones, then the QAT ones (qat_method_names() of
/// qat.h: dorefa, pact, lsq, lsq+, apot).
std::vector<std::string> quantize_method_names();
bool is_ptq_method(const std::string& name);
bool is_qat_method(const std::string& name);
/// ValueError "<what>: unknown method 'x' (known: minmax, percentile, ...)".
void check_quantize_method(const std::string& name, const std::string& what = "quantize");

/// The normalized range of pixels in [0, 1] for datasets with known
/// normalization constants (fashion-mnist, mnist); empty for others. DFQ
/// takes it as the input quantizer's range.
std::vector<double> dataset_input_range(const std::string& dataset);

struct QuantizeMethodOptions {
  /// Method name (quantize_method_names()); default "minmax".
  TORCH_ARG(std::string, method) = "minmax";
  /// Weight and activation bits, 2-8; defaults 8 and 8.
  TORCH_ARG(int64_t, wbits) = 8;
  TORCH_ARG(int64_t, abits) = 8;
  /// Per-output-channel weight scales; default false.
  TORCH_ARG(bool, per_channel) = false;
  /// Bits of the first and last layer (QuantConfig::first_last_bits); 0 =
  /// the same as the others (default).
  TORCH_ARG(int64_t, first_last_bits) = 0;
  /// Per-layer weight bits (mixed precision; wins over wbits).
  TORCH_ARG(BitsMap, weight_bits) = {};
  /// Activation observer of the calibration for dfq (activation_ranges
  /// "calibrate"), adaround and the QAT start; "" = minmax. The PTQ methods
  /// minmax/percentile/mse/kl always use the observer of their name.
  TORCH_ARG(std::string, act_observer) = "";
  /// Calibration batches (>= 1) of batch_size samples: the first ones of the
  /// train split, in order. Defaults 8 and 64.
  TORCH_ARG(int64_t, calib_batches) = 8;
  TORCH_ARG(int64_t, batch_size) = 64;
  /// PTQ methods: empirical bias correction; weight ranges by MSE search. Default false.
  TORCH_ARG(bool, bias_correction) = false;
  TORCH_ARG(bool, weight_mse) = false;
  /// AdaRound Adam steps per layer; default 1000.
  TORCH_ARG(int64_t, adaround_iters) = 1000;
  /// Seed of AdaRound's minibatches and of the validation split; default 0.
  TORCH_ARG(uint64_t, seed) = 0;
  /// dfq: "bn" (activation ranges from BN statistics, data-free) or "calibrate".
  TORCH_ARG(std::string, dfq_act) = "bn";
  /// dfq: k of the range mu +- k sigma; default 6.
  TORCH_ARG(double, range_sigmas) = 6;
  TORCH_ARG(bool, absorb_high_bias) = false;
  TORCH_ARG(bool, equalize) = true;
  TORCH_ARG(bool, analytic_bias_correction) = true;
  /// dfq: the model input's range; empty = dataset_input_range(train.name).
  TORCH_ARG(std::vector<double>, input_range) = {};
  /// QAT recipe (epochs, lr, batch size, seed, out_dir, resume, progress,
  /// max_batches); default 3 epochs, SGD lr 0.01, batch 128.
  TORCH_ARG(TrainOptions, train) = TrainOptions(3).lr(0.01).batch_size(128);
  /// QAT: distill from the fp32 model (QatOptions' default kd spec); default false.
  TORCH_ARG(bool, kd) = false;
  /// QAT: hold out N train samples (split_validation with `seed`) for validation; 0 = none.
  TORCH_ARG(int64_t, val_size) = 0;
  /// QAT: freeze the batch-norm statistics from this epoch on (QatOptions::freeze_bn_epoch); 0 = never.
  TORCH_ARG(int64_t, freeze_bn_epoch) = 0;

 public:
  /// ValueError naming the option: unknown method, bits outside [2, 8]
  /// ("quantize: --wbits must be in [2, 8], got 9"), calib_batches < 1
  /// ("calibration needs at least 1 batch, got 0"), batch_size < 1, epochs < 1,
  /// lr <= 0, bad dfq_act, negative val_size, adaround_iters < 1.
  void validate() const;
  /// The QuantConfig of these options: weights signed symmetric (per channel
  /// if asked), activations unsigned affine, first/last and per-layer bits,
  /// activation observer as described above.
  QuantConfig config() const;
};

struct QuantizeOutcome {
  GraphModule model{nullptr};  ///< folded fake-quant model in eval mode (APoT: with its quantizers)
  QuantConfig config;          ///< the config it was quantized with
  /// False for APoT: non-uniform levels, so no scale table and no int8 model.
  bool uniform = true;
  /// Method details, the keys of nnopt quantize's report.json: equalized_pairs,
  /// bias_corrected, ... (dfq), adaround (per layer), bias_corrected_layers,
  /// ptq_accuracy (QAT, when a test set is given), qat_train_seconds, kd.
  nlohmann::json report = nlohmann::json::object();
  double seconds = 0;  ///< wall time of the quantization (and training)
};

/// Quantizes a copy of `fp32` (unfolded, with its batch norms; not changed)
/// with options.method. `train` gives the calibration batches and the QAT
/// data; `test` (optional) only the ptq_accuracy entry of QAT runs. ValueError
/// for bad options and for settings a method cannot run (e.g. dfq on a model
/// without batch norm).
QuantizeOutcome quantize_with_method(GraphModule& fp32, const Dataset& train, const Dataset* test,
                                     const QuantizeMethodOptions& options);

/// True if the outcome can be lowered to int8 kernels: uniform, every
/// activation quantizer at 8 bits and every weight quantizer at 2-8 bits
/// (stored as int8 codes; with <= 7 bits the kernels are exact on every CPU).
bool runs_on_int8_kernels(GraphModule& model);

}  // namespace nnopt
