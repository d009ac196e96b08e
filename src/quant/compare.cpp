// compare_quant; see compare.h.
#include "nnopt/quant/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <map>
#include <set>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/deploy/int8.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/pipeline/study.h"
#include "nnopt/quant/adaround.h"
#include "nnopt/quant/mixed_precision.h"
#include "nnopt/quant/qat.h"

namespace nnopt {
using json = nlohmann::json;

std::string QuantSetting::label() const { return str_cat(wbits, "/", abits); }
std::string QuantSetting::run_tag() const { return str_cat("w", wbits, "a", abits); }

QuantSettingList parse_quant_settings(const std::string& s, const std::string& what) {
  QuantSettingList out;
  auto parse_bits = [&](const std::string& part, const std::string& item) {
    char* end = nullptr;
    const long v = std::strtol(part.c_str(), &end, 10);
    NNOPT_CHECK(!part.empty() && end == part.c_str() + part.size(), ValueError, what, ": '", item,
                "' is not W/A like 4/4");
    NNOPT_CHECK(v >= 2 && v <= 8, ValueError, what, ": bits must be in [2, 8], got ", v, " in '",
                item, "'");
    return static_cast<int64_t>(v);
  };
  for (const auto& item : split(s, ',')) {
    if (item.empty()) continue;
    const auto parts = split(item, '/');
    NNOPT_CHECK(parts.size() == 2, ValueError, what, ": '", item, "' is not W/A like 4/4");
    QuantSetting q{parse_bits(parts[0], item), parse_bits(parts[1], item)};
    NNOPT_CHECK(std::find(out.begin(), out.end(), q) == out.end(), ValueError, what, ": ",
                q.label(), " is given twice");
    out.push_back(q);
  }
  NNOPT_CHECK(!out.empty(), ValueError, what, ": no W/A settings in '", s, "' (e.g. 8/8,4/4)");
  return out;
}

void QuantCompareOptions::validate() const {
  NNOPT_CHECK(!checkpoint_.empty(), ValueError, "compare quant: no fp32 checkpoint given");
  NNOPT_CHECK(!out_dir_.empty(), ValueError, "compare quant: no output folder (--out DIR)");
  std::set<std::string> seen;
  for (const auto& m : methods_) {
    check_quantize_method(m, "compare quant");
    NNOPT_CHECK(seen.insert(m).second, ValueError, "compare quant: method '", m, "' is given twice");
  }
  NNOPT_CHECK(!settings_.empty(), ValueError, "compare quant: no W/A settings (--bits 8/8,4/4)");
  for (size_t i = 0; i < settings_.size(); ++i) {
    const QuantSetting& s = settings_[i];
    NNOPT_CHECK(s.wbits >= 2 && s.wbits <= 8 && s.abits >= 2 && s.abits <= 8, ValueError,
                "compare quant: bits must be in [2, 8], got ", s.label());
    for (size_t k = 0; k < i; ++k)
      NNOPT_CHECK(!(settings_[k] == s), ValueError, "compare quant: ", s.label(), " is given twice");
  }
  NNOPT_CHECK(latency_options_.repeats >= 1, ValueError,
              "compare quant: latency repeats must be >= 1, got ", latency_options_.repeats);
  NNOPT_CHECK(latency_rounds_ >= 1, ValueError,
              "compare quant: --latency-rounds must be >= 1, got ", latency_rounds_);
  NNOPT_CHECK(quantize_.calib_batches() >= 1, ValueError,
              "compare quant: calibration needs at least 1 batch, got ", quantize_.calib_batches(),
              " (--calib-batches)");
  NNOPT_CHECK(quantize_.train().epochs() >= 1, ValueError,
              "compare quant: --epochs must be >= 1, got ", quantize_.train().epochs());
  // The per-run fields (method, bits) are checked with a valid placeholder.
  QuantizeMethodOptions q = quantize_;
  q.method("minmax").wbits(8).abits(8);
  q.validate();
}

namespace {

const char* const kInt8File = "int8.nnopt";

// Why a method cannot run at a setting (before trying), or "".
std::string not_applicable(const std::string& method, const QuantSetting& s,
                           const QuantizeMethodOptions& q) {
  if (method == "adaround") {
    const int64_t max_bits = AdaRoundOptions().max_bits();
    if (s.wbits > max_bits && q.weight_bits().empty())
      return str_cat("AdaRound learns the rounding of weights with <= ", max_bits,
                     " bits; at W", s.wbits, " every layer would keep round-to-nearest");
  }
  return "";
}

// By conv2d/linear node, of the weight quantizers actually attached (fake-quant
// or QAT): their bits, and the number of distinct values they can output
// (per-channel ones: channel 0's; all channels have the same count; for a
// FakeQuant the size of its integer range, narrow for symmetric grids).
struct AttachedWeightQuant {
  BitsMap bits, levels;
};
AttachedWeightQuant attached_weight_quant(GraphModule& m) {
  AttachedWeightQuant a;
  for (const auto& q : find_quantizers(m))
    if (q.weight) {
      a.bits[q.node] = q.fq->scheme().bits();
      a.levels[q.node] = q.fq->scheme().quant_max() - q.fq->scheme().quant_min() + 1;
    }
  for (const auto& q : find_qat_quantizers(m))
    if (q.weight) {
      a.bits[q.node] = q.q->scheme().bits();
      a.levels[q.node] = q.q->levels(0).numel();
    }
  return a;
}

torch::Tensor all_logits(const std::function<torch::Tensor(const torch::Tensor&)>& fwd,
                         const Dataset& data, int64_t batch = 1000) {
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> out;
  for (int64_t i = 0; i < data.size(); i += batch)
    out.push_back(fwd(data.images.slice(0, i, std::min(data.size(), i + batch))));
  return torch::cat(out);
}

double top1(const torch::Tensor& logits, const torch::Tensor& labels) {
  return logits.argmax(1).eq(labels).to(torch::kFloat64).mean().item<double>();
}

std::string ms_text(const json& lat, const char* b) {
  return lat.is_object() && lat.contains(b) ? fmt(lat.at(b).get<double>(), 2) : "-";
}

}  // namespace

QuantCompareResult compare_quant(const QuantCompareOptions& opt, const Dataset& train,
                                 const Dataset& test) {
  opt.validate();
  const StringList methods = opt.methods().empty() ? quantize_method_names() : opt.methods();
  const QuantSettingList& settings = opt.settings();
  const QuantizeMethodOptions& base = opt.quantize();

  GraphModule fp32 = load_model(opt.checkpoint());
  fp32->eval();
  NNOPT_CHECK(find_quantizers(fp32).empty() && find_qat_quantizers(fp32).empty(), ValueError,
              "compare quant: ", opt.checkpoint(), " is already quantized; give the fp32 checkpoint");
  NNOPT_CHECK(fp32->graph().input_shape() == test.shape(), ValueError, "compare quant: ",
              opt.checkpoint(), " takes ", c10::IntArrayRef(fp32->graph().input_shape()), " but ",
              test.name, " samples are ", c10::IntArrayRef(test.shape()));

  // What must be equal across all runs of this folder (not the methods and
  // settings: they are run names, and adding some extends the table).
  json recipe = train_options_json(base.train());
  json protocol = {{"kind", "compare quant"},
                   {"checkpoint", opt.checkpoint()},
                   {"checkpoint_bytes", file_size(opt.checkpoint())},
                   {"data", train.name},
                   {"train_size", train.size()},
                   {"test_size", test.size()},
                   {"per_channel", base.per_channel()},
                   {"first_last_bits", base.first_last_bits()},
                   {"weight_bits", base.weight_bits()},
                   {"calib_batches", base.calib_batches()},
                   {"calib_batch_size", base.batch_size()},
                   {"act_observer", base.act_observer().empty() ? "minmax" : base.act_observer()},
                   {"weight_mse", base.weight_mse()},
                   {"bias_correction", base.bias_correction()},
                   {"adaround_iters", base.adaround_iters()},
                   {"seed", base.seed()},
                   {"dfq", {{"activation_ranges", base.dfq_act()},
                            {"range_sigmas", base.range_sigmas()},
                            {"absorb_high_bias", base.absorb_high_bias()},
                            {"equalize", base.equalize()},
                            {"analytic_bias_correction", base.analytic_bias_correction()},
                            {"input_range", base.input_range()}}},
                   {"qat", {{"train", recipe}, {"kd", base.kd()}, {"val_size", base.val_size()}}}};
  // Only when set, so that folders started before the option resume.
  if (base.freeze_bn_epoch() > 0) protocol["qat"]["freeze_bn_epoch"] = base.freeze_bn_epoch();
  Study study(opt.out_dir(), protocol);

  // The fp32 reference: accuracy and size (latency: after all runs, below).
  json ref = study.run("fp32", [&](const std::string&) {
    EvalResult ev = evaluate(fp32, test, base.train().eval_batch_size());
    // float32 parameters of the graph with batch norm folded, as the
    // quantized models are (buffers not counted, as quantized_size_bytes
    // does for them).
    json r = {{"accuracy", ev.accuracy}, {"loss", ev.loss},
              {"size_bytes", 4 * fold_batch_norm(fp32)->graph().num_params()}};
    r["file_bytes"] = file_size(opt.checkpoint());
    return r;
  });
  const double fp_acc = ref.at("accuracy").get<double>();

  const int64_t total = static_cast<int64_t>(methods.size() * settings.size());
  int64_t k = 0;
  std::map<std::string, std::map<std::string, json>> cells;  // method -> setting label -> result
  for (const auto& s : settings) {
    for (const auto& m : methods) {
      ++k;
      const std::string why = not_applicable(m, s, base);
      if (!why.empty()) {
        cells[m][s.label()] = {{"method", m}, {"wbits", s.wbits}, {"abits", s.abits},
                               {"status", "n/a"}, {"reason", why}};
        continue;
      }
      const std::string name = m + "/" + s.run_tag();
      if (!study.finished(name))
        std::cerr << "compare quant: run " << k << "/" << total << ": " << m << " W" << s.wbits
                  << "A" << s.abits << std::endl;
      cells[m][s.label()] = study.run(name, [&](const std::string& dir) {
        json r = {{"method", m}, {"wbits", s.wbits}, {"abits", s.abits}};
        QuantizeMethodOptions q = base;
        q.method(m).wbits(s.wbits).abits(s.abits);
        q.train().out_dir(path_join(dir, "qat")).resume(true);
        QuantizeOutcome out;
        try {
          out = quantize_with_method(fp32, train, &test, q);
        } catch (const ValueError& e) {  // the method refuses this model or setting
          r["status"] = "n/a";
          r["reason"] = e.what();
          return r;
        } catch (const GraphError& e) {
          r["status"] = "n/a";
          r["reason"] = e.what();
          return r;
        }
        GraphModule& qm = out.model;
        auto logits = all_logits([&](const torch::Tensor& x) { return qm->forward(x); }, test,
                                 base.train().eval_batch_size());
        const double acc = top1(logits, test.labels);
        r["status"] = "ok";
        r["accuracy"] = acc;
        r["drop_pt"] = 100 * (fp_acc - acc);
        r["seconds"] = out.seconds;
        r["uniform"] = out.uniform;
        const AttachedWeightQuant wq = attached_weight_quant(qm);
        r["weight_bits"] = wq.bits;
        r["weight_levels"] = wq.levels;
        r["size_bytes"] = quantized_size_bytes(qm->graph(), wq.bits, s.wbits);
        r["report"] = out.report;
        if (out.uniform) export_scale_table(qm).save(path_join(dir, "scales.json"));
        // 8/8: the integer model, where the model lowers.
        if (s.wbits == 8 && s.abits == 8) {
          json i8j;
          if (!runs_on_int8_kernels(qm)) {
            i8j = {{"status", "n/a"},
                   {"reason", out.uniform ? "activations not at 8 bits"
                                          : "non-uniform levels (no integer grid)"}};
          } else {
            try {
              Int8Model i8 = lower_to_int8(qm);
              auto il = all_logits([&](const torch::Tensor& x) { return i8.forward(x); }, test,
                                   base.train().eval_batch_size());
              i8j = {{"status", "ok"},
                     {"accuracy", top1(il, test.labels)},
                     {"top1_agreement", top1(il, logits.argmax(1))},
                     {"max_logit_diff", (il - logits).abs().max().item<double>()},
                     {"weight_bytes", i8.weight_bytes()}};
              i8.save(path_join(dir, kInt8File));  // timed after all runs
            } catch (const Error& e) {
              i8j = {{"status", "n/a"}, {"reason", e.what()}};
            }
          }
          r["int8"] = i8j;
        }
        return r;
      });
    }
  }

  // Latency: the fp32 model (batch norm folded, as deployed) and every int8
  // model the 8/8 runs saved, each in turn, over alternating rounds at batch
  // 1 and 64. Not part of the study's cache: timed again for every table.
  std::map<std::string, json> latency;  // "fp32" or method -> {"1": ms, "64": ms}
  std::vector<std::string> notes;
  if (opt.latency()) {
    std::vector<std::string> who{"fp32"};
    GraphModule folded = fold_batch_norm(fp32);
    folded->eval();
    std::vector<ForwardFn> fwd{
        [folded](const torch::Tensor& x) mutable { folded->forward(x); }};
    for (const auto& s : settings) {
      if (s.wbits != 8 || s.abits != 8) continue;
      for (const auto& m : methods) {
        const json& c = cells[m][s.label()];
        if (c.value("status", "") != "ok" || !c.contains("int8") || c["int8"].value("status", "") != "ok")
          continue;
        const std::string file = path_join(path_join(opt.out_dir(), m + "/" + s.run_tag()), kInt8File);
        if (!path_exists(file)) {
          notes.push_back(str_cat(m, " at ", s.label(), ": no latency: ", file,
                                  " is missing (a run from before int8 models were kept; delete its "
                                  "folder to redo it)"));
          continue;
        }
        Int8Model q = Int8Model::load(file);
        who.push_back(m);
        fwd.push_back([q](const torch::Tensor& x) { q.forward(x); });
      }
    }
    for (int64_t b : {int64_t{1}, int64_t{64}}) {
      const std::vector<double> ms =
          alternating_forward_latency(fwd, fp32->graph().input_shape(), b, opt.latency_rounds(), opt.latency_options());
      for (size_t i = 0; i < who.size(); ++i) latency[who[i]][std::to_string(b)] = ms[i];
    }
  }

  // Best (smallest drop) per column; ties all marked.
  std::map<std::string, double> best_drop;
  for (const auto& s : settings) {
    double b = INFINITY;
    for (const auto& m : methods) {
      const json& c = cells[m][s.label()];
      if (c.value("status", "") == "ok") b = std::min(b, c.at("drop_pt").get<double>());
    }
    best_drop[s.label()] = b;
  }
  auto is_best = [&](const json& c, const std::string& label) {
    return c.value("status", "") == "ok" &&
           std::abs(c.at("drop_pt").get<double>() - best_drop[label]) < 1e-9;
  };

  std::vector<std::string> cols{"method"};
  for (const auto& s : settings) cols.push_back("W" + std::to_string(s.wbits) + "A" + std::to_string(s.abits));
  cols.push_back("lat b1 ms");
  cols.push_back("lat b64 ms");
  QuantCompareResult out;
  out.table = Table(cols);
  {
    std::vector<std::string> row{"fp32 " + fmt(100 * fp_acc, 2) + " %"};
    for (size_t i = 0; i < settings.size(); ++i) row.push_back("-");
    const json lat = latency.count("fp32") ? latency["fp32"] : json();
    row.push_back(ms_text(lat, "1"));
    row.push_back(ms_text(lat, "64"));
    out.table.add_row(row);
  }
  json rows = json::array(), sizes = json::object(), best = json::object();
  for (const auto& m : methods) {
    std::vector<std::string> row{m};
    json jcells = json::object();
    const json lat = latency.count(m) ? latency[m] : json();
    for (const auto& s : settings) {
      json c = cells[m][s.label()];
      c["best"] = is_best(c, s.label());
      if (c.value("status", "") == "ok") {
        row.push_back(fmt(c.at("drop_pt").get<double>(), 2) + (c["best"].get<bool>() ? " *" : ""));
        if (!sizes.contains(s.label())) sizes[s.label()] = c.at("size_bytes");
        if (c.contains("int8") && c["int8"].value("status", "") != "ok")
          notes.push_back(str_cat(m, " at ", s.label(), ": no int8 model: ",
                                  c["int8"].value("reason", std::string())));
        else if (c.contains("int8") && latency.count(m)) c["int8"]["latency_ms"] = latency[m];
      } else {
        row.push_back("n/a");
        notes.push_back(str_cat(m, " at ", s.label(), ": n/a: ", c.value("reason", std::string())));
      }
      jcells[s.label()] = c;
    }
    row.push_back(ms_text(lat, "1"));
    row.push_back(ms_text(lat, "64"));
    out.table.add_row(row);
    rows.push_back({{"method", m}, {"cells", jcells}});
  }
  {
    std::vector<std::string> row{"size KiB"};
    for (const auto& s : settings)
      row.push_back(sizes.contains(s.label()) ? fmt(sizes[s.label()].get<double>() / 1024, 1) : "-");
    row.push_back("-");
    row.push_back("-");
    out.table.add_row(row);
  }
  for (const auto& s : settings) {
    json b = json::array();
    for (const auto& m : methods)
      if (is_best(cells[m][s.label()], s.label())) b.push_back(m);
    best[s.label()] = b;
  }

  const double fp_kib = ref.at("size_bytes").get<double>() / 1024;
  std::string title = str_cat(
      "compare quant: ", opt.checkpoint(), " on ", test.name, " (", test.size(),
      " test images): fp32 ", fmt(100 * fp_acc, 2), " %, ", fmt(fp_kib, 1), " KiB\n",
      "protocol: ", base.per_channel() ? "per-channel" : "per-tensor", " weights",
      base.first_last_bits() > 0 ? str_cat(", first/last layer ", base.first_last_bits(), " bits")
                                 : std::string(),
      "; calibration ", base.calib_batches(), " x ", base.batch_size(), " train images; QAT ",
      base.train().epochs(), " epoch(s), lr ", base.train().lr(), ", seed ", base.train().seed(), "\n",
      "cells: test accuracy drop vs fp32 in points (* = smallest of the column); latency: fp32 "
      "model (batch norm folded) in the fp32 row, each method's int8 model at 8/8 in its row, "
      "medians of ", opt.latency_rounds(), " alternating rounds\n");
  // Not every method has the same number of weight levels at W bits (at 2
  // bits 4 against 3): say so under the table, from what each run's weight
  // quantizers can output (layers at the column's W bits).
  {
    std::map<std::string, StringList> by_count;  // "2^W - 1" / "2^W" / ... -> methods
    for (const auto& m : methods) {
      std::set<std::string> kinds;
      for (const auto& s : settings) {
        const json& c = cells[m][s.label()];
        if (c.value("status", "") != "ok" || !c.contains("weight_levels")) continue;
        const int64_t full = int64_t{1} << s.wbits;
        for (auto it = c["weight_levels"].begin(); it != c["weight_levels"].end(); ++it) {
          if (c["weight_bits"].value(it.key(), 0) != s.wbits) continue;
          const int64_t n = it.value().get<int64_t>();
          kinds.insert(n == full ? "2^W" : n == full - 1 ? "2^W - 1 (symmetric around 0)"
                                                         : str_cat(n, " at W = ", s.wbits));
        }
      }
      for (const auto& k : kinds) by_count[k].push_back(m);
    }
    if (by_count.size() > 1) {
      StringList parts;
      for (const auto& [k, ms] : by_count) parts.push_back(str_cat(k, " for ", join(ms, ", ")));
      notes.insert(notes.begin(), "weight levels at W bits: " + join(parts, "; "));
    }
  }
  out.text = title + out.table.to_text();
  for (const auto& n : notes) out.text += "  " + n + "\n";

  out.json = {{"protocol", protocol},
              {"fp32", ref},
              {"latency_ms", latency},
              {"settings", [&] {
                 StringList v;
                 for (const auto& s : settings) v.push_back(s.label());
                 return v;
               }()},
              {"methods", methods},
              {"rows", rows},
              {"sizes", sizes},
              {"best", best},
              {"runs_done", study.runs_done()},
              {"runs_skipped", study.runs_skipped()}};
  write_study_outputs(opt.out_dir(), "compare", out.text, out.table, out.json);
  return out;
}

}  // namespace nnopt
