// Quantization-aware training of a trained fp32 checkpoint on Fashion-MNIST:
// fold batch norm, attach W/A quantizers (first and last layer 8-bit),
// calibrate, run_qat, and report fp32 / PTQ-init / QAT test accuracy (and the
// integer model's accuracy for 8-bit uniform methods). One JSON line on stdout
// and in OUT/result.json.
//
// Usage: bench_qat --model runs/r20/model.nnopt --method lsq --wbits 4 --abits 4
//                  [--epochs 5] [--lr 0.01] [--wd 1e-4] [--batch 128] [--kd 0|1]
//                  [--kd-spec kd:T=4,alpha=0.5] [--calib 8] [--act-observer mse]
//                  [--first-last 8] [--memory-format channels_last|contiguous] [--limit 0]
//                  [--threads 2] [--out DIR] [--fold sim|1] [--freeze-bn EPOCH (0 = never)]
//                  [--init EARLIER_OUT_DIR]
// --init: progressive initialization (the APoT authors' ResNet-20 recipe runs
// 4 -> 3 -> 2 bits, each stage from the one before): start from an earlier
// bench_qat run (fold sim, uniform method) -- its weights, batch-norm
// statistics and learned quantizers, each quantizer re-gridded at the new bits
// over the same clipping range instead of calibrated afresh (the float weights
// alone are no start: outside the learned clipping ranges they went astray).
// --model stays the reference (fp32 accuracy, drop, distillation teacher).
// --fold sim (default): QAT with batch-norm fold simulation (the batch norms
// stay and normalize with batch statistics; GraphModuleImpl::set_bn_fold_simulation),
// folded after training; --fold 1: QAT on the folded graph (diverged at lr 0.01).
#include <cstdio>
#include <iostream>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/int8.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/qat.h"
#include "nnopt/train/trainer.h"

namespace {
using namespace nnopt;

QuantConfig bench_config(int64_t wbits, int64_t abits, const std::string& observer,
                         int64_t first_last) {
  return QuantConfig()
      .weight(QuantScheme(wbits).per_channel(true))
      .activation(QuantScheme(abits).is_signed(false).symmetric(false))
      .activation_observer(observer)
      .first_last_bits(first_last);
}

// The quantized model of the run in `dir` (its result.json and model.nnopt),
// with FakeQuants re-gridded for `cfg`: each keeps its learned range. `m`: a
// fresh fold-simulation model of the same graph.
void start_from_run(GraphModule& m, const std::string& dir, const QuantConfig& cfg,
                    const Dataset& calib) {
  const std::string res = path_join(dir, "result.json");
  nlohmann::json r = nlohmann::json::parse(read_file(res), nullptr, false);
  NNOPT_CHECK(r.is_object() && r.contains("method") && r.contains("wbits"), FileError, res,
              ": not a bench_qat result");
  NNOPT_CHECK(r.value("fold", "") == "sim", ValueError, "--init ", dir, ": needs a --fold sim run");
  const std::string method = r["method"].get<std::string>();
  NNOPT_CHECK(method == "lsq" || method == "lsq+", ValueError, "--init ", dir, ": method ", method,
              " (only lsq and lsq+ keep the weights as they are quantized)");
  const std::string file = path_join(dir, "model.nnopt");
  Checkpoint ck = load_checkpoint(file);
  NNOPT_CHECK(ck.graph == m->graph(), ValueError, "--init ", file, ": its graph differs from --model's");
  GraphModule prev(ck.graph);
  prev->set_bn_fold_simulation(true);
  attach_quantizers(prev, bench_config(r["wbits"].get<int64_t>(), r["abits"].get<int64_t>(),
                                       r["act_observer"].get<std::string>(),
                                       r["first_last_bits"].get<int64_t>()));
  calibrate(prev, calib, 1, 16);  // any qparams: the learned ones are loaded next
  attach_qat_quantizers(prev, QatOptions().method(method));
  try {
    prev->load_state(ck.tensors, true);
    m->load_state(ck.tensors, false);  // the same graph: only the quantizers' tensors are extra
  } catch (const ValueError& e) {
    throw FileError(str_cat(file, ": ", e.what()));
  }
  // The learned quantizers as FakeQuants. Under fold simulation the weight
  // quantizers see the folded weights, as m's will.
  std::map<std::pair<std::string, bool>, std::pair<QuantScheme, QParams>> old;
  for (const auto& a : find_qat_quantizers(prev)) {
    NNOPT_CHECK(a.q->uniform(), ValueError, "--init ", dir, ": ", a.q->describe(), " is not a uniform grid");
    FakeQuantPtr fq = a.q->to_fake_quant();
    old[{a.node, a.weight}] = {fq->scheme(), fq->qparams()};
  }
  attach_quantizers(m, cfg);
  std::map<std::string, QParams> act;
  for (const auto& q : find_quantizers(m)) {
    if (!q.fq->follows().empty()) continue;
    auto it = old.find({q.node, q.weight});
    NNOPT_CHECK(it != old.end(), ValueError, "--init ", dir, ": no quantizer at ", q.node);
    const auto& [sch, qp] = it->second;
    // The range that gives back the same qparams at the old scheme (symmetric:
    // +-scale * (qmax - qmin) / 2, see QuantScheme::qparams).
    const double span = static_cast<double>(sch.quant_max() - sch.quant_min());
    auto zp = qp.zero_point.to(torch::kFloat);
    torch::Tensor lo = sch.symmetric() ? -qp.scale * (span / 2) : (sch.quant_min() - zp) * qp.scale;
    torch::Tensor hi = sch.symmetric() ? qp.scale * (span / 2) : (sch.quant_max() - zp) * qp.scale;
    QParams n = q.fq->scheme().qparams(lo, hi);
    q.fq->set_qparams(n);
    if (!q.weight) act[q.node] = n;
  }
  for (const auto& q : find_quantizers(m)) {
    if (!q.fq->follows().empty()) q.fq->set_qparams(act.at(q.fq->follows()));
    q.fq->set_observing(false);
    q.fq->set_quantizing(true);
  }
}
}  // namespace

int main(int argc, char** argv) {
  using namespace nnopt;
  std::map<std::string, std::string> a = {
      {"model", "/work/runs/r20/model.nnopt"}, {"method", "lsq"}, {"wbits", "4"},
      {"abits", "4"}, {"epochs", "5"}, {"lr", "0.01"}, {"wd", "1e-4"}, {"batch", "128"},
      {"kd", "0"}, {"kd-spec", "kd:T=4,alpha=0.5"}, {"calib", "8"}, {"act-observer", "mse"},
      {"first-last", "8"}, {"memory-format", "channels_last"}, {"limit", "0"}, {"threads", "2"}, {"out", ""}, {"progress", "lines"},
      {"fold", "sim"}, {"freeze-bn", "0"}, {"init", ""}};
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || !a.count(k.substr(2))) {
      std::cerr << "bench_qat: unknown option " << k << "\n";
      return 2;
    }
    a[k.substr(2)] = argv[i + 1];
  }
  try {
    set_threads(std::stoi(a["threads"]));
    DatasetOptions dopt;
    dopt.limit = std::stoll(a["limit"]);
    Dataset train = load_dataset(dopt, true), test = load_dataset(dopt, false);
    GraphModule fp32 = load_model(a["model"]);
    fp32->eval();
    const double acc_fp32 = evaluate(fp32, test).accuracy;
    NNOPT_CHECK(a["fold"] == "1" || a["fold"] == "sim", ValueError, "--fold must be sim or 1, got ", a["fold"]);
    const bool sim = a["fold"] == "sim";
    GraphModule m = sim ? load_model(a["model"]) : fold_batch_norm(fp32);
    m->set_bn_fold_simulation(sim);
    const int64_t wb = std::stoll(a["wbits"]), ab = std::stoll(a["abits"]);
    QuantConfig cfg = bench_config(wb, ab, a["act-observer"], std::stoll(a["first-last"]));
    if (a["init"].empty()) {
      attach_quantizers(m, cfg);
      calibrate(m, train, std::stoll(a["calib"]), 128);
    } else {
      NNOPT_CHECK(sim, ValueError, "--init needs --fold sim");
      start_from_run(m, a["init"], cfg, train);
    }
    const double acc_ptq = evaluate(m, test).accuracy;
    QatOptions q = QatOptions().method(a["method"]).distill({a["kd-spec"]}).freeze_bn_epoch(std::stoll(a["freeze-bn"]));
    q.train() = TrainOptions(std::stoll(a["epochs"]))
                    .lr(std::stod(a["lr"]))
                    .weight_decay(std::stod(a["wd"]))
                    .batch_size(std::stoll(a["batch"]))
                    .nesterov(true)
                    .crop_padding(2)
                    .hflip(true)
                    .seed(0)
                    .out_dir(a["out"])
                    // An interrupted run continues from OUT/checkpoint.nnopt (same seed, same result).
                    .resume(!a["out"].empty() && path_exists(path_join(a["out"], "checkpoint.nnopt")))
                    .memory_format(a["memory-format"])
                    .progress(a["progress"]);
    double t0 = now_seconds();
    TrainResult r = run_qat(m, train, &test, q, a["kd"] == "1" ? fp32 : GraphModule(nullptr));
    const double secs = now_seconds() - t0;
    if (sim) {
      m->eval();
      m = fold_batch_norm(m);  // the quantizers move over unchanged
    }
    const double acc_qat = evaluate(m, test).accuracy;
    nlohmann::json j = {{"model", a["model"]}, {"method", a["method"]}, {"wbits", wb},
                        {"abits", ab}, {"first_last_bits", std::stoll(a["first-last"])},
                        {"epochs", std::stoll(a["epochs"])}, {"lr", std::stod(a["lr"])},
                        {"kd", a["kd"] == "1" ? a["kd-spec"] : ""}, {"fold", a["fold"]}, {"freeze_bn_epoch", std::stoll(a["freeze-bn"])},
                        {"act_observer", a["act-observer"]}, {"init", a["init"]},
                        {"fp32_acc", acc_fp32}, {"ptq_acc", acc_ptq}, {"qat_acc", acc_qat},
                        {"drop_pt", 100 * (acc_fp32 - acc_qat)}, {"qat_seconds", secs}};
    nlohmann::json hist = nlohmann::json::array();
    for (const auto& e : r.history) hist.push_back(e.val_acc);
    j["val_acc_per_epoch"] = hist;
    if (find_qat_quantizers(m).front().q->uniform()) {
      convert_qat_to_fake_quant(m);
      j["fakequant_acc_after_convert"] = evaluate(m, test).accuracy;
      if (wb == 8 && ab == 8) {
        Int8Model i8 = lower_to_int8(m);
        j["int8_acc"] = evaluate_logits([&](const torch::Tensor& x) { return i8.forward(x); }, test)
                            .accuracy;
      }
    }
    std::cout << j.dump() << std::endl;
    if (!a["out"].empty()) write_file_atomic(path_join(a["out"], "result.json"), j.dump(2) + "\n");
  } catch (const Error& e) {
    std::cerr << "bench_qat: " << e.what() << "\n";
    return 2;
  }
  return 0;
}
