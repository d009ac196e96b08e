// quantize_with_method; see quantize_method.h.
#include "nnopt/quant/quantize_method.h"

#include <algorithm>
#include <tuple>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/quant/dfq.h"
#include "nnopt/quant/ptq.h"
#include "nnopt/quant/qat.h"

namespace nnopt {
using json = nlohmann::json;

const std::vector<std::string>& ptq_method_names() {
  static const std::vector<std::string> m{"minmax", "percentile", "mse", "kl", "dfq", "adaround"};
  return m;
}

std::vector<std::string> quantize_method_names() {
  std::vector<std::string> m = ptq_method_names();
  for (const auto& q : qat_method_names()) m.push_back(q);
  return m;
}

bool is_ptq_method(const std::string& name) {
  const auto& m = ptq_method_names();
  return std::find(m.begin(), m.end(), name) != m.end();
}

bool is_qat_method(const std::string& name) {
  const auto m = qat_method_names();
  return std::find(m.begin(), m.end(), name) != m.end();
}

void check_quantize_method(const std::string& name, const std::string& what) {
  if (is_ptq_method(name) || is_qat_method(name)) return;
  std::string known;
  for (const auto& m : quantize_method_names()) known += (known.empty() ? "" : ", ") + m;
  throw ValueError(str_cat(what, ": unknown method '", name, "' (known: ", known, ")"));
}

std::vector<double> dataset_input_range(const std::string& dataset) {
  if (dataset == "fashion-mnist")
    return {(0 - kFashionMnistMean) / kFashionMnistStd, (1 - kFashionMnistMean) / kFashionMnistStd};
  if (dataset == "mnist") return {(0 - kMnistMean) / kMnistStd, (1 - kMnistMean) / kMnistStd};
  return {};
}

void QuantizeMethodOptions::validate() const {
  check_quantize_method(method_);
  NNOPT_CHECK(wbits_ >= 2 && wbits_ <= 8, ValueError, "quantize: --wbits must be in [2, 8], got ", wbits_);
  NNOPT_CHECK(abits_ >= 2 && abits_ <= 8, ValueError, "quantize: --abits must be in [2, 8], got ", abits_);
  NNOPT_CHECK(first_last_bits_ == 0 || (first_last_bits_ >= 2 && first_last_bits_ <= 8), ValueError,
              "quantize: --first-last-bits must be 0 or in [2, 8], got ", first_last_bits_);
  NNOPT_CHECK(calib_batches_ >= 1, ValueError, "quantize: calibration needs at least 1 batch, got ",
              calib_batches_, " (--calib-batches)");
  NNOPT_CHECK(batch_size_ >= 1, ValueError, "quantize: --batch-size must be >= 1, got ", batch_size_);
  NNOPT_CHECK(adaround_iters_ >= 1, ValueError, "quantize: --adaround-iters must be >= 1, got ",
              adaround_iters_);
  NNOPT_CHECK(dfq_act_ == "bn" || dfq_act_ == "calibrate", ValueError,
              "quantize: --dfq-act must be bn or calibrate, got '", dfq_act_, "'");
  NNOPT_CHECK(val_size_ >= 0, ValueError, "quantize: --val-size must be >= 0, got ", val_size_);
  NNOPT_CHECK(train_.epochs() >= 1, ValueError, "quantize: --epochs must be >= 1, got ", train_.epochs());
  NNOPT_CHECK(freeze_bn_epoch_ >= 0 && freeze_bn_epoch_ <= train_.epochs(), ValueError,
              "quantize: --freeze-bn-epoch must be in [0, ", train_.epochs(), "] (0 = never; the QAT epochs), got ",
              freeze_bn_epoch_);
  NNOPT_CHECK(train_.lr() > 0, ValueError, "quantize: --lr must be > 0, got ", train_.lr());
  NNOPT_CHECK(train_.batch_size() >= 1, ValueError, "quantize: --qat-batch-size must be >= 1, got ",
              train_.batch_size());
  train_.validate();
  config().validate();
  // act_observer is checked even when this method does not use it (one
  // protocol serves every method of a comparison).
  if (!act_observer_.empty()) config().activation_observer(act_observer_).validate();
}

QuantConfig QuantizeMethodOptions::config() const {
  QuantConfig cfg;
  cfg.weight(QuantScheme(wbits_).per_channel(per_channel_))
      .activation(QuantScheme(abits_).is_signed(false).symmetric(false))
      .first_last_bits(first_last_bits_)
      .weight_bits(weight_bits_);
  // The observer methods are their observer; the others calibrate with act_observer.
  if (method_ == "minmax" || method_ == "percentile" || method_ == "mse" || method_ == "kl")
    cfg.activation_observer(method_);
  else if (!act_observer_.empty())
    cfg.activation_observer(act_observer_);
  return cfg;
}

namespace {
double accuracy_on(GraphModule& m, const Dataset& d) { return evaluate(m, d).accuracy; }
}  // namespace

QuantizeOutcome quantize_with_method(GraphModule& fp32, const Dataset& train, const Dataset* test,
                                     const QuantizeMethodOptions& o) {
  o.validate();
  const std::string& method = o.method();
  const double t0 = now_seconds();
  QuantizeOutcome out;
  out.config = o.config();
  json& j = out.report;
  if (method == "dfq") {
    DfqOptions d;
    d.config(out.config)
        .absorb_high_bias(o.absorb_high_bias())
        .activation_ranges(o.dfq_act())
        .range_sigmas(o.range_sigmas())
        .equalize(o.equalize())
        .bias_correction(o.analytic_bias_correction())
        .weight_mse(o.weight_mse());
    d.input_range(o.input_range().empty() ? dataset_input_range(train.name) : o.input_range());
    DfqResult r = run_dfq(fp32, d, &train, o.calib_batches(), o.batch_size());
    out.model = r.model;
    j["equalized_pairs"] = r.equalization.plan.pairs.size();
    j["equalize_iterations"] = r.equalization.iterations;
    j["equalize_skipped"] = r.equalization.plan.skipped;
    j["bias_corrected"] = r.corrected;
    j["bias_uncorrected"] = r.uncorrected;
    j["high_bias_absorbed"] = r.absorbed;
    j["activation_ranges"] =
        o.dfq_act() == "bn" ? "batch-norm statistics (data-free)" : "calibrated";
  } else if (is_ptq_method(method)) {
    PtqOptions p;
    p.config(out.config)
        .calib_batches(o.calib_batches())
        .batch_size(o.batch_size())
        .bias_correction(o.bias_correction())
        .weight_mse(method == "mse" || o.weight_mse());
    if (method == "adaround")
      p.adaround(true).adaround_options(AdaRoundOptions().iterations(o.adaround_iters()).seed(o.seed()));
    PtqResult r = run_ptq(fp32, train, p);
    out.model = r.model;
    if (!r.adaround.empty()) {
      json aj = json::array();
      for (const auto& l : r.adaround)
        aj.push_back({{"node", l.node}, {"bits", l.bits}, {"loss_nearest", l.loss_nearest},
                      {"loss_adaround", l.loss_adaround}, {"flipped", l.flipped}});
      j["adaround"] = aj;
    }
    if (!r.bias_shifts.empty()) j["bias_corrected_layers"] = r.bias_shifts.size();
  } else {
    // QAT: a calibrated PTQ model first, then the method's learnable
    // quantizers. The batch norms stay during training (fold simulation: they
    // normalize with batch statistics) and are folded at the end.
    PtqResult p = run_ptq(fp32, train,
                          PtqOptions()
                              .config(out.config)
                              .calib_batches(o.calib_batches())
                              .batch_size(o.batch_size())
                              .weight_mse(o.weight_mse())
                              .bn_fold_simulation(true));
    GraphModule q = p.model;
    if (test != nullptr) j["ptq_accuracy"] = accuracy_on(q, *test);
    Dataset tr = train, val;
    if (o.val_size() > 0) std::tie(tr, val) = split_validation(train, o.val_size(), o.seed());
    QatOptions qo;
    qo.method(method).train(o.train()).freeze_bn_epoch(o.freeze_bn_epoch());
    TrainResult r = run_qat(q, tr, o.val_size() > 0 ? &val : nullptr, qo,
                            o.kd() ? fp32 : GraphModule(nullptr));
    j["qat_train_seconds"] = r.seconds;
    j["qat_epochs"] = r.history.size();
    if (r.resumed_from >= 0) j["qat_resumed_from"] = r.resumed_from;
    j["kd"] = o.kd();
    q->eval();
    q = fold_batch_norm(q);  // the quantizers move over unchanged
    for (const auto& a : find_qat_quantizers(q))
      if (!a.q->uniform()) out.uniform = false;  // APoT: non-uniform levels stay as they are
    if (out.uniform) convert_qat_to_fake_quant(q);
    q->eval();
    out.model = q;
  }
  out.model->eval();
  out.seconds = now_seconds() - t0;
  return out;
}

bool runs_on_int8_kernels(GraphModule& model) {
  if (!find_qat_quantizers(model).empty()) return false;
  auto qs = find_quantizers(model);
  if (qs.empty()) return false;
  for (const auto& q : qs)
    if (q.weight ? q.fq->scheme().bits() > 8 : q.fq->scheme().bits() != 8) return false;
  return true;
}

}  // namespace nnopt
