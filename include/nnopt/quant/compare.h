#pragma once
// compare_quant: every quantization method at every W/A setting under one
// protocol, one table (nnopt compare quant). The answer to "methods are hard
// to compare due to a wide variety of settings": all runs start from the same
// fp32 checkpoint, calibrate on the same first N training batches, and the QAT
// methods train with the same recipe (epochs, lr, batch size, seed) on the
// same data; only the method and the bits differ.
//
// Table (the style of the talk): rows = methods, columns = W/A settings,
// cells = test accuracy drop vs fp32 in points (the fp32 accuracy in the
// first row), '*' marking the smallest drop of each column (all tied ones);
// a row with the model size per setting (KiB, quantized_size_bytes of the
// run's actual per-layer bits); and, per method, the latency at batch 1 and
// 64 of its int8 model at 8/8 (deploy/int8.h, onednn) where it lowers (the
// fp32 row holds the fp32 latency, batch norm folded). Latency is measured
// after all runs, every model in turn over alternating rounds, from the int8
// models the runs saved (DIR/<method>/w8a8/int8.nnopt), so the figures of a
// table meet the same machine state even when its runs took days. A method
// that cannot run at a setting
// shows "n/a"; the JSON says why:
//   * adaround at weights > 4 bits: AdaRound learns the rounding of <= 4-bit
//     weights (AdaRoundOptions::max_bits); above it would be round-to-nearest;
//   * a method refusing the model or setting (ValueError / GraphError from
//     the method, e.g. dfq on a model without batch norm): the message.
// The runs go through a Study (pipeline/study.h): DIR/study.json holds the
// protocol (another protocol is refused), the fp32 reference is run "fp32",
// each method/setting is run "<method>/w<W>a<A>" (finished when its
// result.json exists; QAT runs resume from DIR/<run>/qat/checkpoint.nnopt).
// Methods and settings are not part of the protocol: adding some later
// extends the same table.
//
// Example:
//   nnopt::QuantCompareOptions o;
//   o.checkpoint("runs/r20/model.nnopt").out_dir("runs/cmp-quant")
//    .methods({"minmax", "dfq", "lsq"}).settings(nnopt::parse_quant_settings("8/8,4/4"));
//   o.quantize().per_channel(true).first_last_bits(8).train().epochs(3);
//   nnopt::QuantCompareResult r = nnopt::compare_quant(o, train, test);
//   std::cout << r.text;   // also in runs/cmp-quant/compare.{txt,csv,json}
#include <torch/arg.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nnopt/core/table.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/quant/quantize_method.h"

namespace nnopt {

using StringList = std::vector<std::string>;

/// One W/A column: weight and activation bits.
struct QuantSetting {
  int64_t wbits = 8, abits = 8;
  std::string label() const;    ///< "8/8"
  std::string run_tag() const;  ///< "w8a8"
  bool operator==(const QuantSetting& o) const { return wbits == o.wbits && abits == o.abits; }
};
using QuantSettingList = std::vector<QuantSetting>;

/// "8/8,4/4,3/3,2/2" -> settings. ValueError naming `what` for a malformed
/// item ("--bits: '4-4' is not W/A like 4/4"), bits outside [2, 8], repeats,
/// an empty list.
QuantSettingList parse_quant_settings(const std::string& s, const std::string& what = "--bits");

struct QuantCompareOptions {
  /// The fp32 checkpoint (.nnopt, not quantized).
  TORCH_ARG(std::string, checkpoint);
  /// Methods in table order; empty = all (quantize_method_names()).
  TORCH_ARG(StringList, methods) = {};
  /// W/A columns; default 8/8, 4/4, 3/3, 2/2.
  TORCH_ARG(QuantSettingList, settings) = parse_quant_settings("8/8,4/4,3/3,2/2");
  /// The shared protocol: per_channel, first_last_bits, calibration
  /// (calib_batches, batch_size, act_observer, weight_mse), adaround_iters,
  /// dfq options, the QAT recipe (train: epochs, lr, batch size, seed,
  /// max_batches), kd. Its method, wbits, abits, train().out_dir and
  /// train().resume are set per run. Default: first and last layer at 8 bits.
  TORCH_ARG(QuantizeMethodOptions, quantize) = QuantizeMethodOptions().first_last_bits(8);
  /// Measure fp32 and int8 latency (batch 1 and 64); default true.
  TORCH_ARG(bool, latency) = true;
  /// How latency is timed; default 3 warm-up runs, median of 20, at most 5 s each.
  TORCH_ARG(LatencyOptions, latency_options) = LatencyOptions{3, 20, 5.0};
  /// Latency is timed after all runs, the fp32 model and every int8 model in
  /// turn, this many rounds (alternating_medians); default 5.
  TORCH_ARG(int64_t, latency_rounds) = 5;
  /// The study folder.
  TORCH_ARG(std::string, out_dir);

 public:
  /// ValueError: no checkpoint or out_dir, unknown or repeated method (listing
  /// the known ones), no settings, bits outside [2, 8], repeated settings,
  /// bad quantize options (calibration with zero batches, epochs < 1, ...).
  void validate() const;
};

struct QuantCompareResult {
  Table table{{"method"}};
  std::string text;     ///< title line + table + best/n/a notes (compare.txt)
  nlohmann::json json;  ///< protocol, fp32, settings, rows with per-cell results, sizes
};

/// Runs (or resumes) the study and builds the table; writes
/// out_dir/compare.{txt,csv,json}. ValueError if the checkpoint is already
/// quantized or does not take the dataset's samples.
QuantCompareResult compare_quant(const QuantCompareOptions& options, const Dataset& train,
                                 const Dataset& test);

}  // namespace nnopt
