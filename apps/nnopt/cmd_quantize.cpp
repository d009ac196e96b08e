// nnopt quantize: post-training quantization (calibrated observers, bias
// correction, data-free quantization, AdaRound), mixed precision under a size
// budget, and the quantization-aware training methods of quant/qat.h; writes
// the fake-quant model, its scale table and, at 8 bits, the integer model.
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/core/table.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/int8.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/quant/mixed_precision.h"
#include "nnopt/quant/qat.h"
#include "nnopt/quant/ptq.h"
#include "nnopt/quant/quantize_method.h"
#include "nnopt/train/trainer.h"

namespace nnopt::cli {
using json = nlohmann::json;

namespace {

std::string pct(double v) { return fmt(100 * v, 2) + " %"; }

// Logits of `fwd` on all of `data`, in batches; [N, classes].
torch::Tensor all_logits(const std::function<torch::Tensor(const torch::Tensor&)>& fwd,
                         const Dataset& data, int64_t batch = 1000) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < data.size(); i += batch)
    out.push_back(fwd(data.images.slice(0, i, std::min(data.size(), i + batch))));
  return torch::cat(out);
}
double accuracy_of(const torch::Tensor& logits, const Dataset& d) {
  return logits.argmax(1).eq(d.labels).to(torch::kFloat64).mean().item<double>();
}

}  // namespace

void register_quantize(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static std::string checkpoint, method = "minmax", dfq_act = "bn", mixed_bits = "2,4,8",
                                 act_observer;
  static int64_t wbits = 8, abits = 8, calib_batches = 8, batch_size = 64,
                 first_last_bits = 0, adaround_iters = 1000, sens_samples = 1000;
  static bool per_channel = false, bias_corr = false, absorb = false, no_latency = false,
              weight_mse = false, no_equalize = false, no_analytic_bc = false;
  static double size_budget_kib = 0, range_sigmas = 6;
  static QatArgs qat;
  auto* sub = app.add_subcommand(
      "quantize", "quantize a checkpoint: PTQ (minmax, percentile, mse, kl), data-free (dfq), "
                  "AdaRound, QAT (dorefa, pact, lsq, lsq+, apot); int8 model at 8 bits");
  add_common(sub, c);
  add_data(sub, d);
  sub->add_option("checkpoint", checkpoint, "fp32 nnopt checkpoint")->required();
  sub->add_option("--method", method,
                  "minmax, percentile, mse, kl (PTQ with that activation observer), dfq, adaround, "
                  "dorefa, pact, lsq, lsq+, apot");
  sub->add_option("--wbits", wbits, "weight bits (2-8)");
  sub->add_option("--abits", abits, "activation bits (2-8)");
  sub->add_flag("--per-channel", per_channel, "per-output-channel weight scales");
  sub->add_option("--calib-batches", calib_batches, "calibration batches from the train split");
  sub->add_option("--batch-size", batch_size, "calibration batch size");
  sub->add_option("--first-last-bits", first_last_bits,
                  "bits of the first and last layer (0 = same as the others)");
  sub->add_option("--act-observer", act_observer,
                  "activation observer for dfq/adaround/QAT calibration (default minmax)");
  sub->add_flag("--bias-correction", bias_corr, "empirical bias correction (PTQ methods)");
  sub->add_flag("--weight-mse", weight_mse,
                "weight ranges by a per-channel MSE search instead of min/max (PTQ methods and dfq)");
  add_qat_options(sub, qat);
  sub->add_option("--adaround-iters", adaround_iters, "AdaRound Adam steps per layer");
  sub->add_option("--dfq-act", dfq_act,
                  "dfq activation ranges: bn (from batch-norm statistics, data-free) or calibrate");
  sub->add_option("--range-sigmas", range_sigmas, "dfq: activation range mean +- k sigma");
  sub->add_flag("--absorb-high-bias", absorb, "dfq: high-bias absorption");
  sub->add_flag("--no-equalize", no_equalize, "dfq: skip cross-layer equalization (ablation)");
  sub->add_flag("--no-analytic-bias-correction", no_analytic_bc,
                "dfq: skip the analytic bias correction (ablation)");
  sub->add_option("--size-budget", size_budget_kib,
                  "mixed precision: weight bits per layer so that the model fits KIB kibibytes");
  sub->add_option("--mixed-bits", mixed_bits, "mixed precision: candidate weight bits");
  sub->add_option("--sensitivity-samples", sens_samples,
                  "mixed precision: held-out train samples (the last N) for the sensitivity");
  sub->add_flag("--no-latency", no_latency, "skip the int8 / fp32 latency measurement");
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      // Everything the user typed is checked before data or models are loaded.
      NNOPT_CHECK(size_budget_kib >= 0, ValueError, "quantize: --size-budget must be > 0 KiB, got ",
                  size_budget_kib);
      std::vector<int64_t> cand;
      for (const auto& p : split(mixed_bits, ','))
        if (!p.empty()) cand.push_back(parse_shape(p, "--mixed-bits")[0]);
      if (c.out.empty()) c.out = "runs/quantize";
      QuantizeMethodOptions o;
      o.method(method).wbits(wbits).abits(abits).per_channel(per_channel)
          .first_last_bits(first_last_bits).act_observer(act_observer)
          .calib_batches(calib_batches).batch_size(batch_size).bias_correction(bias_corr)
          .weight_mse(weight_mse).adaround_iters(adaround_iters).seed(c.seed).dfq_act(dfq_act)
          .range_sigmas(range_sigmas).absorb_high_bias(absorb).equalize(!no_equalize)
          .analytic_bias_correction(!no_analytic_bc);
      apply_qat_options(qat, c, o);
      o.train().out_dir(path_join(c.out, "qat"));
      o.validate();
      const bool is_qat = is_qat_method(method);
      if (method == "adaround" && wbits > 4)
        std::cerr << "note: AdaRound rounds layers with <= 4 weight bits; at W" << wbits
                  << " only the MSE weight ranges apply unless --size-budget gives layers fewer bits\n";

      GraphModule fp32 = load_model(checkpoint);
      fp32->eval();
      DatasetOptions dso = dataset_options(d);
      Dataset train = load_dataset(dso, true);
      Dataset test = load_dataset(dso, false);
      NNOPT_CHECK(fp32->graph().input_shape() == test.shape(), ValueError, "quantize: the model takes ",
                  c10::IntArrayRef(fp32->graph().input_shape()), " but ", test.name, " samples are ",
                  c10::IntArrayRef(test.shape()));
      make_dirs(c.out);
      json j = {{"checkpoint", checkpoint}, {"method", method}, {"wbits", wbits}, {"abits", abits},
                {"per_channel", per_channel}, {"calib_batches", calib_batches},
                {"dataset", test.name}, {"test_samples", test.size()}};
      const double t0 = now_seconds();
      auto fp_logits = all_logits([&](const torch::Tensor& x) { return fp32->forward(x); }, test);
      const double fp_acc = accuracy_of(fp_logits, test);
      j["fp32_accuracy"] = fp_acc;
      std::cerr << "nnopt quantize: " << method << " W" << wbits << "A" << abits
                << (per_channel ? " per-channel" : " per-tensor") << " on " << checkpoint
                << " (fp32 test accuracy " << pct(fp_acc) << "), " << threads() << " threads\n";

      // Mixed precision: per-layer weight bits under the size budget.
      if (size_budget_kib > 0) {
        NNOPT_CHECK(!is_qat, ValueError, "quantize: --size-budget works with the PTQ methods");
        const int64_t n = std::min<int64_t>(sens_samples, train.size());
        Dataset held = train.slice(train.size() - n, train.size());
        GraphModule base = clone_plain(fp32);
        GraphModule folded = fold_batch_norm(base);
        folded->eval();
        auto sopt = SensitivityOptions().bits(cand).weight(o.config().weight());
        auto sens = weight_sensitivity(folded, held, sopt);
        BitAllocation a = allocate_bits(folded->graph(), sens,
                                        static_cast<int64_t>(size_budget_kib * 1024), "accuracy");
        o.weight_bits(a.weight_bits);
        std::cerr << "sensitivity on " << n << " held-out train samples; allocation:\n" << a.to_string();
        json sj = json::array();
        for (const auto& s : sens) {
          json e = {{"node", s.node}, {"params", s.params}};
          for (const auto& [b, v] : s.accuracy_drop) e["accuracy_drop"][std::to_string(b)] = v;
          for (const auto& [b, v] : s.loss_increase) e["loss_increase"][std::to_string(b)] = v;
          sj.push_back(e);
        }
        j["sensitivity"] = sj;
        j["weight_bits"] = a.weight_bits;
        j["predicted_drop"] = a.predicted_drop;
        j["size_budget_bytes"] = static_cast<int64_t>(size_budget_kib * 1024);
        j["quantized_size_bytes"] = a.size_bytes;
      }

      QuantizeOutcome out = quantize_with_method(fp32, train, &test, o);
      GraphModule q = out.model;
      const QuantConfig& cfg = out.config;
      j.update(out.report);
      j["quantize_seconds"] = now_seconds() - t0;

      auto fq_logits = all_logits([&](const torch::Tensor& x) { return q->forward(x); }, test);
      const double fq_acc = accuracy_of(fq_logits, test);
      j["fake_quant_accuracy"] = fq_acc;
      j["drop_pt"] = 100 * (fp_acc - fq_acc);
      const std::string model_path = path_join(c.out, "model.nnopt");
      const std::string table_path = path_join(c.out, "scales.json");
      const std::string meta = json{{"quantize", {{"method", method}, {"wbits", wbits}, {"abits", abits},
                                                  {"per_channel", per_channel}}},
                                    {"test_accuracy", fq_acc}}.dump();
      if (!out.uniform) {
        // Non-uniform levels: no scale table and no integer model (see quant/qat.h).
        save_qat_model(model_path, q, meta);
        j["note"] = method + " levels are not a uniform grid with an integer zero point in range: no scale table, no int8 model";
      } else {
        ScaleTable table = export_scale_table(q);
        table.save(table_path);
        save_quantized_model(model_path, q, meta);
        j["scale_table"] = table_path;
      }
      j["model"] = model_path;
      j["fp32_size_bytes"] = file_size(checkpoint);
      j["quantized_size_bytes_estimate"] =
          quantized_size_bytes(q->graph(), cfg.weight_bits(), wbits);

      Table t({"model", "test accuracy", "drop (pt)"});
      t.add_row({"fp32", pct(fp_acc), "-"});
      t.add_row({"fake-quant", pct(fq_acc), fmt(100 * (fp_acc - fq_acc), 2)});
      std::string extra;

      // 8-bit activations, weights of <= 8 bits: the integer model.
      if (runs_on_int8_kernels(q)) {
        Int8Model i8 = lower_to_int8(q);
        auto i8_logits = all_logits([&](const torch::Tensor& x) { return i8.forward(x); }, test);
        const double i8_acc = accuracy_of(i8_logits, test);
        const double agree =
            i8_logits.argmax(1).eq(fq_logits.argmax(1)).to(torch::kFloat64).mean().item<double>();
        const double maxdiff = (i8_logits - fq_logits).abs().max().item<double>();
        const std::string i8_path = path_join(c.out, "model.int8.nnopt");
        i8.save(i8_path, json{{"quantize", {{"method", method}}}, {"test_accuracy", i8_acc}}.dump());
        j["int8_model"] = i8_path;
        j["int8_accuracy"] = i8_acc;
        j["int8_fake_quant_top1_agreement"] = agree;
        j["int8_max_logit_diff"] = maxdiff;
        j["int8_size_bytes"] = file_size(i8_path);
        t.add_row({"int8 (onednn)", pct(i8_acc), fmt(100 * (fp_acc - i8_acc), 2)});
        extra += str_cat("int8 vs fake-quant: top-1 agreement ", pct(agree), ", max |logit diff| ",
                         fmt(maxdiff, 4), "\n");
        const auto sat = i8.saturating_layers();
        j["int8_saturating_layers"] = sat;
        if (!sat.empty())
          extra += str_cat("int8: ", sat.size(), " layer(s) may saturate (this CPU has no VNNI, so"
                           " onednn adds u8*s8 product pairs in int16); --wbits 7 runs exactly\n");
        if (!no_latency) {
          // int8 and fp32 as deployed (batch norm folded), in turn over 5 rounds.
          LatencyOptions lo;
          lo.repeats = 20;
          lo.max_seconds = 5;
          GraphModule fp_folded = fold_batch_norm(fp32);
          fp_folded->eval();
          json lat = json::object();
          for (int64_t b : {int64_t{1}, int64_t{64}}) {
            const std::vector<double> ms = alternating_forward_latency(
                {[&](const torch::Tensor& x) { i8.forward(x); },
                 [&](const torch::Tensor& x) { fp_folded->forward(x); }},
                q->graph().input_shape(), b, 5, lo);
            lat[std::to_string(b)] = {{"int8_ms", ms[0]}, {"fp32_ms", ms[1]}, {"speedup", ms[1] / ms[0]}};
            extra += str_cat("latency batch ", b, ": int8 ", fmt(ms[0], 3), " ms, fp32 (batch norm folded) ",
                             fmt(ms[1], 3), " ms (", fmt(ms[1] / ms[0], 2), "x; medians of 5 alternating rounds)\n");
          }
          j["latency"] = lat;
        }
      }
      j["seconds"] = now_seconds() - t0;
      write_file_atomic(path_join(c.out, "report.json"), j.dump(2) + "\n");
      emit(c, t.to_text() + extra + str_cat("model: ", model_path, "\n",
                                            j.contains("scale_table") ? "scale table: " + table_path + "\n" : ""),
           j.dump());
      return 0;
    };
  });
}

void add_qat_options(CLI::App* app, QatArgs& q) {
  app->add_option("--epochs", q.epochs, "QAT epochs (default 3)");
  app->add_option("--lr", q.lr, "QAT learning rate (default 0.01)");
  app->add_option("--weight-decay", q.weight_decay, "QAT weight decay (default 5e-4)");
  app->add_option("--schedule", q.schedule, "QAT schedule: constant, step, multistep or cosine (default)")
      ->check(CLI::IsMember({"constant", "step", "multistep", "cosine"}));
  app->add_option("--qat-batch-size", q.batch, "QAT training batch size (default 128)");
  app->add_option("--max-batches", q.max_batches, "QAT: batches per epoch at most (0 = all)");
  app->add_option("--val-size", q.val_size, "QAT: hold out N train samples for validation (0 = none)");
  app->add_flag("--kd", q.kd, "QAT: distill from the fp32 model (kd:T=4,alpha=0.5)");
  app->add_option("--freeze-bn-epoch", q.freeze_bn_epoch,
                  "QAT: batch norms use and keep their running statistics from this epoch on (0 = never)");
}

void apply_qat_options(const QatArgs& q, const Common& c, QuantizeMethodOptions& o) {
  o.kd(q.kd).val_size(q.val_size).freeze_bn_epoch(q.freeze_bn_epoch);
  o.train().epochs(q.epochs).lr(q.lr).weight_decay(q.weight_decay).schedule(q.schedule)
      .batch_size(q.batch).max_batches(q.max_batches).seed(c.seed).progress(c.progress);
}

}  // namespace nnopt::cli
