// nnopt compare quant: every quantization method at every W/A setting under
// one protocol, one table (quant/compare.h).
#include <iostream>

#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/strings.h"
#include "nnopt/data/dataset.h"
#include "nnopt/quant/compare.h"

namespace nnopt::cli {

void register_compare_quant(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static std::string checkpoint, methods, bits = "8/8,4/4,3/3,2/2", act_observer;
  static int64_t calib_batches = 8, batch_size = 64, first_last_bits = 8, adaround_iters = 1000,
                 latency_rounds = 5;
  static QatArgs qat;
  static bool per_channel = false, weight_mse = false, no_latency = false;
  auto* sub = compare_command(app)->add_subcommand(
      "quant", "every quantization method (PTQ, DFQ, AdaRound, QAT) at each W/A setting under one "
               "protocol: accuracy drop vs fp32, best per column, model size, int8 latency");
  add_common(sub, c);
  add_data(sub, d);
  sub->add_option("checkpoint", checkpoint, "fp32 nnopt checkpoint")->required();
  sub->add_option("--methods", methods,
                  "comma-separated subset of minmax,percentile,mse,kl,dfq,adaround,dorefa,pact,lsq,"
                  "lsq+,apot (default all)");
  sub->add_option("--bits", bits, "W/A settings, comma-separated (default 8/8,4/4,3/3,2/2)");
  sub->add_flag("--per-channel", per_channel, "per-output-channel weight scales");
  sub->add_option("--first-last-bits", first_last_bits,
                  "bits of the first and last layer (default 8; 0 = same as the others)");
  sub->add_option("--calib-batches", calib_batches, "calibration batches from the train split (default 8)");
  sub->add_option("--batch-size", batch_size, "calibration batch size (default 64)");
  sub->add_option("--act-observer", act_observer,
                  "activation observer of the calibration dfq/adaround/QAT start from (default minmax)");
  sub->add_flag("--weight-mse", weight_mse, "weight ranges by MSE search for every PTQ start");
  sub->add_option("--adaround-iters", adaround_iters, "AdaRound Adam steps per layer (default 1000)");
  add_qat_options(sub, qat);
  sub->add_flag("--no-latency", no_latency, "skip the fp32 / int8 latency measurement");
  sub->add_option("--latency-rounds", latency_rounds,
                  "latency: every model timed in turn, this many rounds, medians (default 5)");
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      if (c.out.empty()) c.out = "runs/compare-quant";
      StringList ms = split_list(methods);
      QuantCompareOptions o;
      o.checkpoint(checkpoint).out_dir(c.out).methods(ms).settings(parse_quant_settings(bits, "--bits"))
          .latency(!no_latency)
          .latency_rounds(latency_rounds);
      QuantizeMethodOptions& q = o.quantize();
      q.per_channel(per_channel).first_last_bits(first_last_bits).calib_batches(calib_batches)
          .batch_size(batch_size).act_observer(act_observer).weight_mse(weight_mse)
          .adaround_iters(adaround_iters).seed(c.seed);
      apply_qat_options(qat, c, q);
      o.validate();  // before any data is read
      NNOPT_CHECK(path_exists(checkpoint), FileError, checkpoint, ": checkpoint not found");
      DatasetOptions dso = dataset_options(d);
      Dataset train = load_dataset(dso, true);
      Dataset test = load_dataset(dso, false);
      QuantCompareResult r = compare_quant(o, train, test);
      emit(c, str_cat(r.text, "(table also in ", c.out, "/compare.{txt,csv,json})\n"), r.json.dump());
      return 0;
    };
  });
}

}  // namespace nnopt::cli
