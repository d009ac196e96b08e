// Quantization-aware training: attaching learnable quantizers, the QAT
// callback, run_qat, and conversion back to FakeQuants.
#include "nnopt/quant/qat.h"

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/distill/distill_callback.h"
#include "nnopt/distill/teacher.h"
#include "nnopt/quant/apot.h"
#include "nnopt/quant/attach.h"
#include "nnopt/nn/checkpoint.h"
#include "scheme_json.h"

namespace nnopt {

void QatOptions::validate() const {
  qat_method(method());  // ValueError listing the known methods
  NNOPT_CHECK(std::isfinite(clip_decay()) && clip_decay() >= 0, ValueError,
              "clip_decay must be >= 0 and finite, got ", clip_decay());
  NNOPT_CHECK(!distill().empty(), ValueError,
              "distill needs at least one loss spec (e.g. 'kd:T=4,alpha=0.5')");
  NNOPT_CHECK(freeze_bn_epoch() >= 0, ValueError, "freeze_bn_epoch must be >= 0 (0 = never), got ",
              freeze_bn_epoch());
  NNOPT_CHECK(freeze_bn_epoch() <= train().epochs(), ValueError, "freeze_bn_epoch ", freeze_bn_epoch(),
              " is after the last of the ", train().epochs(), " epochs");
  train().validate();
}

FakeQuantPtr QatQuantizerImpl::to_fake_quant() const {
  throw ValueError(str_cat("quantizer '", describe(),
                           "' has non-uniform levels and cannot become a FakeQuant"));
}

std::vector<AttachedQatQuantizer> find_qat_quantizers(GraphModule& model) {
  std::vector<AttachedQatQuantizer> out;
  for (const Node& n : model->graph().nodes()) {
    NodeModuleImpl& m = model->node_module(n.name);
    if (auto q = std::dynamic_pointer_cast<QatQuantizerImpl>(m.weight_transform))
      out.push_back({n.name, true, q});
    if (auto q = std::dynamic_pointer_cast<QatQuantizerImpl>(m.act_transform))
      out.push_back({n.name, false, q});
  }
  return out;
}

void attach_qat_quantizers(GraphModule& model, const QatOptions& opt) {
  opt.validate();
  const QatMethod& method = qat_method(opt.method());
  auto fqs = find_quantizers(model);
  NNOPT_CHECK(!fqs.empty(), ValueError,
              "QAT needs a model with calibrated quantizers (attach_quantizers + calibrate); "
              "this one has none");
  for (const auto& a : fqs)
    NNOPT_CHECK(!a.fq->observing(), ValueError, "QAT: the ", a.weight ? "weight" : "activation",
                " quantizer of '", a.node, "' was never calibrated (still observing)");
  // Build all first, then attach, so that an error leaves the model unchanged.
  std::vector<std::pair<AttachedQuantizer, QatQuantizerPtr>> made;
  for (const auto& a : fqs) {
    if (!a.fq->follows().empty()) continue;  // followers stay FakeQuants (synced to their leader)
    QuantizerInit init;
    init.scheme = a.fq->scheme();
    init.qparams = a.fq->qparams();
    init.weight = a.weight;
    init.options = &opt;
    if (a.weight) init.value = model->weight_transform_input(a.node).detach();
    auto& f = a.weight ? method.weight : method.activation;
    QatQuantizerPtr q = f ? f(init) : nullptr;
    if (q) made.emplace_back(a, q);
  }
  for (auto& [a, q] : made) {
    if (a.weight)
      model->set_weight_transform(a.node, q);
    else
      model->set_activation_transform(a.node, q);
  }
}

namespace {

// Followers (average pools) re-quantize with their leader's qparams, as the
// integer average pool keeps its input's grid. Non-uniform leaders: off.
void sync_followers(GraphModule& model) {
  std::map<std::string, TransformPtr> act;
  for (const Node& n : model->graph().nodes())
    if (auto t = model->node_module(n.name).act_transform) act[n.name] = t;
  for (const auto& a : find_quantizers(model)) {
    if (a.weight || a.fq->follows().empty()) continue;
    auto it = act.find(a.fq->follows());
    if (it == act.end()) continue;
    if (auto fq = std::dynamic_pointer_cast<FakeQuantImpl>(it->second)) {
      a.fq->set_qparams(fq->qparams());
      a.fq->set_quantizing(fq->quantizing());
    } else if (auto q = std::dynamic_pointer_cast<QatQuantizerImpl>(it->second)) {
      if (q->uniform()) {
        a.fq->set_qparams(q->to_fake_quant()->qparams());
        a.fq->set_quantizing(true);
      } else {
        a.fq->set_quantizing(false);
      }
    }
  }
}

class QatCallback : public Callback {
 public:
  QatCallback(GraphModule model, QatOptions opt) : model_(std::move(model)), opt_(std::move(opt)) {}
  std::string name() const override { return "qat"; }
  void on_train_begin(TrainState&) override {
    quantizers_ = find_qat_quantizers(model_);
    NNOPT_CHECK(!quantizers_.empty(), ValueError,
                "QAT callback: the model carries no QAT quantizers (attach_qat_quantizers first)");
  }
  void on_epoch_begin(TrainState& st) override {
    // The trainer has just put the whole model in train mode: freeze again.
    if (opt_.freeze_bn_epoch() == 0 || st.epoch + 1 < opt_.freeze_bn_epoch()) return;
    for (const Node& n : model_->graph().nodes())
      if (n.op == OpKind::kBatchNorm) model_->node_module(n.name).eval();
  }
  bool on_batch_begin(TrainState&) override {
    sync_followers(model_);
    return true;
  }
  torch::Tensor loss_term(TrainState& state) override {
    if (opt_.clip_decay() == 0) return {};
    torch::Tensor sum;
    for (const auto& a : quantizers_) {
      torch::Tensor p = a.q->clip_penalty();
      if (!p.defined()) continue;
      sum = sum.defined() ? sum + p : p;
    }
    if (!sum.defined()) return {};
    torch::Tensor term = sum * (opt_.clip_decay() / 2);
    state.step_terms["clip_l2"] = term.item<double>();
    return term;
  }
  void on_train_end(TrainState&) override { sync_followers(model_); }

 private:
  GraphModule model_;
  QatOptions opt_;
  std::vector<AttachedQatQuantizer> quantizers_;
};

}  // namespace

CallbackPtr make_qat_callback(GraphModule model, const QatOptions& opt) {
  opt.validate();
  return std::make_shared<QatCallback>(std::move(model), opt);
}

TrainResult run_qat(GraphModule& model, const Dataset& train, const Dataset* val,
                    const QatOptions& opt, GraphModule teacher) {
  opt.validate();
  // Attach unless the model already carries learnable quantizers (continuing a run).
  if (find_qat_quantizers(model).empty()) attach_qat_quantizers(model, opt);
  if (!teacher && !opt.teacher().empty())
    teacher = load_teacher_model(opt.teacher(), model->graph().input_shape());
  Trainer trainer(model, opt.train());
  trainer.add_callback(make_qat_callback(model, opt));
  if (teacher) {
    std::vector<LossSpec> specs;
    for (const auto& s : opt.distill()) specs.push_back(parse_loss_spec(s));
    trainer.add_callback(make_distill_callback(teacher, model, specs));
  }
  TrainResult r = trainer.fit(train, val);
  sync_followers(model);
  return r;
}

void convert_qat_to_fake_quant(GraphModule& model) {
  NNOPT_CHECK(!model->bn_fold_simulation(), ValueError,
              "convert QAT quantizers: the model runs batch-norm fold simulation; fold_batch_norm it first "
              "(the quantizers then see the weights they were trained on)");
  auto qs = find_qat_quantizers(model);
  // Check everything first so that an error leaves the model unchanged.
  for (const auto& a : qs)
    NNOPT_CHECK(a.q->uniform(), ValueError, "cannot convert the ", a.weight ? "weight" : "activation",
                " quantizer of '", a.node, "' (", a.q->describe(),
                ") to a FakeQuant: its levels are not a uniform grid with a zero point in range");
  std::vector<FakeQuantPtr> fqs;
  for (const auto& a : qs) fqs.push_back(a.q->to_fake_quant());
  torch::NoGradGuard ng;
  for (size_t i = 0; i < qs.size(); ++i) {
    const auto& a = qs[i];
    if (a.weight) {
      NodeModuleImpl& m = model->node_module(a.node);
      m.weight.copy_(a.q->fq_input(m.weight));
      model->set_weight_transform(a.node, fqs[i]);
    } else {
      model->set_activation_transform(a.node, fqs[i]);
    }
  }
  sync_followers(model);
}

namespace {
constexpr const char* kQatTransformsKey = "qat_transforms";
}  // namespace

void save_qat_model(const std::string& path, GraphModule& model, const std::string& meta_json) {
  nlohmann::json meta = nlohmann::json::parse(meta_json, nullptr, false);
  NNOPT_CHECK(meta.is_object(), ValueError, "save_qat_model: metadata must be a JSON object");
  nlohmann::json records = nlohmann::json::array();
  for (const Node& n : model->graph().nodes()) {
    NodeModuleImpl& m = model->node_module(n.name);
    for (bool weight : {true, false}) {
      const TransformPtr& t = weight ? m.weight_transform : m.act_transform;
      if (!t) continue;
      nlohmann::json r = {{"node", n.name}, {"weight", weight}};
      if (auto fq = std::dynamic_pointer_cast<FakeQuantImpl>(t)) {
        r["kind"] = "fake_quant";
        r["scheme"] = scheme_to_json(fq->scheme());
        r["channels"] = fq->qparams().scale.numel();
        r["follows"] = fq->follows();
        r["quantizing"] = fq->quantizing();
      } else if (auto ap = std::dynamic_pointer_cast<ApotQuantizerImpl>(t)) {
        r["kind"] = "apot";
        r["scheme"] = scheme_to_json(ap->scheme());
        r["signed_grid"] = ap->signed_grid();
        r["channels"] = ap->channels();
      } else {
        throw ValueError(str_cat("save_qat_model: the ", weight ? "weight" : "activation", " transform of '",
                                 n.name, "' (", t->describe(),
                                 ") cannot be saved; convert uniform quantizers first (convert_qat_to_fake_quant)"));
      }
      records.push_back(r);
    }
  }
  meta[kQatTransformsKey] = records;
  save_model(path, model, meta.dump());
}

bool has_qat_transforms(const std::string& meta_json) {
  if (meta_json.find(kQatTransformsKey) == std::string::npos) return false;
  nlohmann::json meta = nlohmann::json::parse(meta_json, nullptr, false);
  return meta.is_object() && meta.contains(kQatTransformsKey);
}

void restore_qat_transforms(GraphModule& model, const std::string& meta_json) {
  nlohmann::json meta = nlohmann::json::parse(meta_json, nullptr, false);
  NNOPT_CHECK(meta.is_object() && meta.contains(kQatTransformsKey) && meta[kQatTransformsKey].is_array(),
              ValueError, "QAT transforms: the metadata has no '", kQatTransformsKey, "' list");
  struct Made {
    std::string node;
    bool weight;
    TransformPtr t;
  };
  std::vector<Made> made;  // all checked and built before the model changes
  const auto& records = meta[kQatTransformsKey];
  for (size_t i = 0; i < records.size(); ++i) {
    const auto& r = records[i];
    std::string what = str_cat("QAT transform ", i);
    NNOPT_CHECK(r.is_object() && r.contains("node") && r["node"].is_string() && r.contains("weight") &&
                    r["weight"].is_boolean() && r.contains("kind") && r["kind"].is_string() &&
                    r.contains("scheme") && r.contains("channels") && r["channels"].is_number_integer(),
                ValueError, what, ": needs node, weight, kind, scheme and channels");
    const std::string node = r["node"].get<std::string>(), kind = r["kind"].get<std::string>();
    const bool weight = r["weight"].get<bool>();
    what = str_cat(what, " ('", node, "' ", weight ? "weight" : "activation", ")");
    NNOPT_CHECK(model->graph().contains(node), ValueError, what, ": no such node in the model's graph");
    const QuantScheme s = scheme_from_json(r["scheme"], what + " scheme");
    const int64_t channels = r["channels"].get<int64_t>();
    NNOPT_CHECK(channels >= 1 && channels <= (int64_t{1} << 20), ValueError, what, ": channels must be in [1, 2^20], got ",
                channels);
    auto flag = [&](const char* key) {
      NNOPT_CHECK(r.contains(key) && r[key].is_boolean(), ValueError, what, ": '", key, "' must be true or false");
      return r[key].get<bool>();
    };
    TransformPtr t;
    if (kind == "fake_quant") {
      NNOPT_CHECK(r.contains("follows") && r["follows"].is_string(), ValueError, what, ": 'follows' must be a string");
      auto fq = std::make_shared<FakeQuantImpl>(s, nullptr, channels);
      fq->set_follows(r["follows"].get<std::string>());
      fq->set_quantizing(flag("quantizing"));
      t = fq;
    } else if (kind == "apot") {
      t = std::make_shared<ApotQuantizerImpl>(s, weight, flag("signed_grid"), 1.0, channels);
    } else {
      throw ValueError(str_cat(what, ": unknown kind '", kind, "' (known: fake_quant, apot)"));
    }
    made.push_back({node, weight, t});
  }
  for (const auto& m : made) {
    if (m.weight)
      model->set_weight_transform(m.node, m.t);
    else
      model->set_activation_transform(m.node, m.t);
  }
  sync_followers(model);
}

}  // namespace nnopt
