#include "nnopt/train/trainer.h"
#include "nnopt/train/fused_sgd.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/progress.h"
#include "nnopt/core/runtime.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/train/schedule.h"

namespace nnopt {
using json = nlohmann::json;

json train_options_json(const TrainOptions& o) {
  return {{"epochs", o.epochs()},
          {"batch_size", o.batch_size()},
          {"optimizer", o.optimizer()},
          {"lr", o.lr()},
          {"momentum", o.momentum()},
          {"nesterov", o.nesterov()},
          {"weight_decay", o.weight_decay()},
          {"schedule", o.schedule()},
          {"warmup_epochs", o.warmup_epochs()},
          {"step_size", o.step_size()},
          {"milestones", o.milestones()},
          {"gamma", o.gamma()},
          {"label_smoothing", o.label_smoothing()},
          {"crop_padding", o.crop_padding()},
          {"hflip", o.hflip()},
          {"seed", o.seed()},
          {"max_batches", o.max_batches()},
          {"memory_format", o.memory_format()}};  // prefetch and progress do not change results
}

namespace {
constexpr const char* kOptimizerTensor = "__optimizer__";
json options_json(const TrainOptions& o) { return train_options_json(o); }

json metrics_json(const EpochMetrics& m) {
  auto num = [](double v) { return std::isfinite(v) ? json(v) : json(nullptr); };
  json j = {{"epoch", m.epoch},
            {"lr", m.lr},
            {"train_loss", num(m.train_loss)},
            {"train_acc", num(m.train_acc)},
            {"val_loss", num(m.val_loss)},
            {"val_acc", num(m.val_acc)},
            {"steps", m.steps},
            {"skipped", m.skipped},
            {"seconds", m.seconds},
            {"images_per_sec", m.images_per_sec}};
  for (const auto& [k, v] : m.extra) j[k] = num(v);
  return j;
}

EpochMetrics metrics_from_json(const json& j) {
  auto num = [&](const char* k) {
    return j.contains(k) && j[k].is_number() ? j[k].get<double>()
                                             : std::numeric_limits<double>::quiet_NaN();
  };
  EpochMetrics m;
  m.epoch = j.value("epoch", 0);
  m.lr = num("lr");
  m.train_loss = num("train_loss");
  m.train_acc = num("train_acc");
  m.val_loss = num("val_loss");
  m.val_acc = num("val_acc");
  m.steps = j.value("steps", 0);
  m.skipped = j.value("skipped", 0);
  m.seconds = num("seconds");
  m.images_per_sec = num("images_per_sec");
  static const char* kBase[] = {"epoch", "lr", "train_loss", "train_acc", "val_loss",
                                "val_acc", "steps", "skipped", "seconds", "images_per_sec"};
  for (auto it = j.begin(); it != j.end(); ++it) {
    bool base = false;
    for (auto* b : kBase) base = base || it.key() == b;
    if (!base) m.extra[it.key()] = it->is_number() ? it->get<double>() : NAN;
  }
  return m;
}

std::string optimizer_bytes(torch::optim::Optimizer& opt) {
  torch::serialize::OutputArchive ar;
  opt.save(ar);
  std::ostringstream os;
  ar.save_to(os);
  return os.str();
}

void load_optimizer_bytes(torch::optim::Optimizer& opt, const std::string& bytes) {
  std::istringstream is(bytes);
  torch::serialize::InputArchive ar;
  ar.load_from(is);
  opt.load(ar);
}

// The first named tensor of `items` for which bad(tensor) holds, or "".
template <typename Items, typename Get>
std::string first_non_finite(const Items& items, Get get) {
  for (const auto& it : items) {
    const torch::Tensor t = get(it.value());
    if (t.defined() && t.is_floating_point() && !t.isfinite().all().item<bool>()) return it.key();
  }
  return "";
}

// Where a non-finite loss or gradient came from, for the error: the first
// parameter or buffer that already holds inf/nan, if any.
std::string non_finite_state(torch::nn::Module& m) {
  torch::NoGradGuard ng;
  std::string name = first_non_finite(m.named_parameters(), [](const torch::Tensor& t) { return t; });
  if (!name.empty()) return str_cat("; parameter ", name, " already holds inf/nan");
  name = first_non_finite(m.named_buffers(), [](const torch::Tensor& t) { return t; });
  if (!name.empty()) return str_cat("; buffer ", name, " holds inf/nan");
  return "";
}

// Before an optimizer step: one reduction over all gradients (an overflow of
// the sum also counts: such gradients diverge anyway); only when it is not
// finite, a second pass names the first parameter whose gradient is not.
std::string non_finite_gradient(torch::nn::Module& m, const std::vector<torch::Tensor>& params) {
  torch::NoGradGuard ng;
  torch::Tensor total;
  for (const auto& p : params) {
    const torch::Tensor& g = p.grad();
    if (!g.defined()) continue;
    torch::Tensor s = g.sum();
    total = total.defined() ? total + s : s;
  }
  if (!total.defined() || std::isfinite(total.item<double>())) return "";
  std::string name =
      first_non_finite(m.named_parameters(), [](const torch::Tensor& t) { return t.grad(); });
  return name.empty() ? std::string("the gradients sum to inf") : "the gradient of " + name + " is not finite";
}
}  // namespace

std::string EpochMetrics::to_json() const { return metrics_json(*this).dump(); }

void TrainOptions::validate() const {
  NNOPT_CHECK(epochs() >= 1, ValueError, "epochs must be >= 1, got ", epochs());
  NNOPT_CHECK(batch_size() >= 1, ValueError, "batch_size must be >= 1, got ", batch_size());
  NNOPT_CHECK(eval_batch_size() >= 1, ValueError, "eval_batch_size must be >= 1, got ",
              eval_batch_size());
  NNOPT_CHECK(optimizer() == "sgd" || optimizer() == "adam" || optimizer() == "adamw", ValueError,
              "optimizer must be one of sgd, adam, adamw; got '", optimizer(), "'");
  NNOPT_CHECK(lr() > 0 && std::isfinite(lr()), ValueError, "lr must be > 0, got ", lr());
  NNOPT_CHECK(momentum() >= 0 && momentum() < 1, ValueError, "momentum must be in [0, 1), got ",
              momentum());
  NNOPT_CHECK(!nesterov() || momentum() > 0, ValueError, "nesterov needs momentum > 0");
  NNOPT_CHECK(weight_decay() >= 0, ValueError, "weight_decay must be >= 0, got ", weight_decay());
  NNOPT_CHECK(warmup_epochs() >= 0 && warmup_epochs() <= epochs(), ValueError,
              "warmup_epochs must be in [0, epochs], got ", warmup_epochs());
  NNOPT_CHECK(label_smoothing() >= 0 && label_smoothing() < 1, ValueError,
              "label_smoothing must be in [0, 1), got ", label_smoothing());
  NNOPT_CHECK(memory_format() == "channels_last" || memory_format() == "contiguous", ValueError,
              "memory_format must be channels_last or contiguous, got '", memory_format(), "'");
  NNOPT_CHECK(crop_padding() >= 0, ValueError, "crop_padding must be >= 0, got ", crop_padding());
  NNOPT_CHECK(max_batches() >= 0, ValueError, "max_batches must be >= 0, got ", max_batches());
  NNOPT_CHECK(!resume() || !out_dir().empty(), ValueError, "resume needs an output folder");
  progress_mode_from_name(progress());
  LrSchedule s;
  s.kind = schedule();
  s.base_lr = lr();
  s.step_size = step_size();
  s.gamma = gamma();
  s.validate();
}

torch::Tensor task_loss(const torch::Tensor& logits, const torch::Tensor& target,
                        double label_smoothing) {
  return at::cross_entropy_loss(logits, target, {}, at::Reduction::Mean, -100, label_smoothing);
}

EvalResult evaluate_logits(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                           const Dataset& data, int64_t batch_size) {
  NNOPT_CHECK(batch_size > 0, ValueError, "eval batch size must be > 0, got ", batch_size);
  NNOPT_CHECK(data.size() > 0, ValueError, "evaluate: dataset '", data.name, "' is empty");
  torch::NoGradGuard ng;
  double loss = 0;
  int64_t correct = 0, n = data.size();
  for (int64_t b = 0; b < n; b += batch_size) {
    int64_t e = std::min(n, b + batch_size);
    auto y = data.labels.slice(0, b, e);
    auto logits = forward(data.images.slice(0, b, e));
    loss += task_loss(logits, y).item<double>() * (e - b);
    correct += logits.argmax(1).eq(y).sum().item<int64_t>();
  }
  return {loss / n, static_cast<double>(correct) / n, n};
}

EvalResult evaluate(GraphModule& model, const Dataset& data, int64_t batch_size) {
  bool was_training = model->is_training();
  model->eval();
  EvalResult r;
  try {
    r = evaluate_logits([&](const torch::Tensor& x) { return model->forward(x); }, data, batch_size);
  } catch (...) {
    model->train(was_training);
    throw;
  }
  model->train(was_training);
  return r;
}

Trainer::Trainer(GraphModule model, TrainOptions options)
    : model_(std::move(model)), opt_(std::move(options)) {
  opt_.validate();
  tune_allocator();
}

void Trainer::add_callback(CallbackPtr cb) {
  NNOPT_CHECK(cb, ValueError, "add_callback: null callback");
  for (const auto& c : callbacks_)
    NNOPT_CHECK(c->name() != cb->name(), ValueError, "callback '", cb->name(),
                "' is registered twice");
  callbacks_.push_back(std::move(cb));
}

std::unique_ptr<torch::optim::Optimizer> Trainer::make_optimizer() const {
  auto params = model_->parameters();
  if (opt_.optimizer() == "sgd")
    return std::make_unique<FusedSGD>(params, torch::optim::SGDOptions(opt_.lr())
                                                           .momentum(opt_.momentum())
                                                           .nesterov(opt_.nesterov())
                                                           .weight_decay(opt_.weight_decay()));
  if (opt_.optimizer() == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(opt_.lr()).weight_decay(opt_.weight_decay()));
  return std::make_unique<torch::optim::AdamW>(
      params, torch::optim::AdamWOptions(opt_.lr()).weight_decay(opt_.weight_decay()));
}

void Trainer::save_state(const TrainState& st, const std::vector<EpochMetrics>& history) const {
  if (opt_.out_dir().empty()) return;
  json hist = json::array();
  for (const auto& m : history) hist.push_back(metrics_json(m));
  json cbs = json::object();
  for (const auto& c : callbacks_) cbs[c->name()] = json::parse(c->state_json());
  json meta = {{"kind", "train_state"},
               {"epochs_done", st.epoch + 1},
               {"global_step", st.global_step},
               {"options", options_json(opt_)},
               {"history", hist},
               {"callbacks", cbs}};
  Checkpoint ck;
  ck.graph = model_->graph();
  ck.tensors = model_->state();
  std::string ob = optimizer_bytes(*optimizer_);
  auto t = torch::empty({static_cast<int64_t>(ob.size())}, torch::kUInt8);
  std::memcpy(t.data_ptr(), ob.data(), ob.size());
  ck.tensors[kOptimizerTensor] = t;
  ck.meta_json = meta.dump();
  save_checkpoint(path_join(opt_.out_dir(), "checkpoint.nnopt"), ck);
  // The latest model on its own, and the metrics so far (rewritten whole, atomically).
  json model_meta = {{"kind", "model"},
                     {"epochs_done", st.epoch + 1},
                     {"options", options_json(opt_)},
                     {"val_acc", history.empty() ? json(nullptr) : metrics_json(history.back())["val_acc"]}};
  GraphModule model = model_;
  save_model(path_join(opt_.out_dir(), "model.nnopt"), model, model_meta.dump());
  std::string lines;
  for (const auto& m : history) lines += m.to_json() + "\n";
  write_file_atomic(path_join(opt_.out_dir(), "metrics.jsonl"), lines);
}

bool Trainer::load_state(TrainState& st, std::vector<EpochMetrics>& history) {
  std::string path = path_join(opt_.out_dir(), "checkpoint.nnopt");
  if (!path_exists(path)) return false;
  Checkpoint ck = load_checkpoint(path);
  json meta = json::parse(ck.meta_json);
  NNOPT_CHECK(meta.value("kind", "") == "train_state", FileError, path,
              ": not a training checkpoint (cannot resume from it)");
  NNOPT_CHECK(ck.graph == model_->graph(), ValueError, path,
              ": the checkpoint's graph differs from the model being trained");
  json saved = meta["options"], now = options_json(opt_);
  for (auto it = now.begin(); it != now.end(); ++it)
    NNOPT_CHECK(it.key() == "epochs" || saved.value(it.key(), json()) == it.value(), ValueError,
                path, ": option '", it.key(), "' was ", saved.value(it.key(), json()).dump(),
                " in the interrupted run but is ", it.value().dump(), " now");
  auto ob = ck.tensors.at(kOptimizerTensor);
  ck.tensors.erase(kOptimizerTensor);
  model_->load_state(ck.tensors, true);
  load_optimizer_bytes(*optimizer_,
                       std::string(static_cast<const char*>(ob.data_ptr()), ob.numel()));
  st.epoch = meta.at("epochs_done").get<int64_t>();
  st.global_step = meta.at("global_step").get<int64_t>();
  history.clear();
  for (const auto& m : meta.at("history")) history.push_back(metrics_from_json(m));
  const json& cbs = meta.value("callbacks", json::object());
  for (auto& c : callbacks_)
    if (cbs.contains(c->name())) c->load_state_json(cbs[c->name()].dump());
  return true;
}

TrainResult Trainer::fit(const Dataset& train, const Dataset* val) {
  NNOPT_CHECK(train.size() > 0, ValueError, "train: dataset '", train.name, "' is empty");
  TrainResult result;
  double t_start = now_seconds();
  optimizer_ = make_optimizer();
  // The memory order holds for this fit only: the caller shares the model.
  struct FormatGuard {
    GraphModule m;
    bool before;
    ~FormatGuard() { m->set_channels_last(before); }
  } format_guard{model_, model_->channels_last()};
  model_->set_channels_last(opt_.memory_format() == "channels_last");

  LoaderOptions lo;
  lo.batch_size = opt_.batch_size();
  lo.shuffle = true;
  lo.seed = opt_.seed();
  lo.augment.crop_padding = opt_.crop_padding();
  lo.augment.hflip = opt_.hflip();
  lo.prefetch = opt_.prefetch();
  DataLoader loader(train, lo);
  int64_t steps_per_epoch = loader.num_batches();
  if (opt_.max_batches() > 0) steps_per_epoch = std::min(steps_per_epoch, opt_.max_batches());

  LrSchedule sched;
  sched.kind = opt_.schedule();
  sched.base_lr = opt_.lr();
  sched.steps_per_epoch = steps_per_epoch;
  sched.total_steps = steps_per_epoch * opt_.epochs();
  sched.warmup_steps = static_cast<int64_t>(std::llround(opt_.warmup_epochs() * steps_per_epoch));
  sched.step_size = opt_.step_size();
  sched.milestones = opt_.milestones();
  sched.gamma = opt_.gamma();
  sched.validate();

  TrainState st;
  st.model = model_;
  st.optimizer = optimizer_.get();
  st.options = &opt_;
  st.steps_per_epoch = steps_per_epoch;
  std::vector<EpochMetrics>& history = result.history;
  if (opt_.resume() && load_state(st, history)) {
    result.resumed_from = st.epoch;
    std::fprintf(stderr, "resuming from %s at epoch %lld/%lld\n",
                 path_join(opt_.out_dir(), "checkpoint.nnopt").c_str(),
                 static_cast<long long>(st.epoch + 1), static_cast<long long>(opt_.epochs()));
  }
  if (!opt_.out_dir().empty()) make_dirs(opt_.out_dir());

  std::vector<std::string> taps;
  for (const auto& c : callbacks_)
    for (const auto& t : c->taps()) taps.push_back(t);
  for (auto& c : callbacks_) c->on_train_begin(st);

  ProgressMode pmode = progress_mode_from_name(opt_.progress());
  for (; st.epoch < opt_.epochs() && !st.stop; ++st.epoch) {
    // Everything random in epoch e depends only on (seed, e).
    seed_everything(opt_.seed() * 1000003ULL + static_cast<uint64_t>(st.epoch) + 1);
    model_->train();
    loader.start_epoch(st.epoch);
    for (auto& c : callbacks_) c->on_epoch_begin(st);
    double t0 = now_seconds();
    double loss_sum = 0;
    int64_t correct = 0, seen = 0, steps = 0, skipped = 0;
    std::map<std::string, double> term_sums;
    Progress bar(steps_per_epoch,
                 str_cat("epoch ", st.epoch + 1, "/", opt_.epochs()), pmode);
    Batch batch;
    for (st.step_in_epoch = 0; st.step_in_epoch < steps_per_epoch && loader.next(batch);
         ++st.step_in_epoch) {
      st.batch = &batch;
      st.lr = sched.at(st.epoch * steps_per_epoch + st.step_in_epoch);
      for (auto& g : optimizer_->param_groups()) g.options().set_lr(st.lr);
      bool run = true;
      for (auto& c : callbacks_) run = c->on_batch_begin(st) && run;
      if (!run) {
        ++skipped;
        continue;
      }
      st.taps.clear();
      st.step_terms.clear();
      st.skip_step = false;
      st.logits = taps.empty() ? model_->forward(batch.x) : model_->forward(batch.x, taps, st.taps);
      torch::Tensor loss;
      if (st.task_weight != 0) {
        auto ce = task_loss(st.logits, batch.y, opt_.label_smoothing());
        st.step_terms["ce"] = ce.item<double>();
        loss = st.task_weight == 1.0 ? ce : ce * st.task_weight;
      }
      for (auto& c : callbacks_) {
        auto term = c->loss_term(st);
        if (term.defined()) loss = loss.defined() ? loss + term : term;
      }
      NNOPT_CHECK(loss.defined(), ValueError,
                  "train: no loss (task_weight is 0 and no callback adds a loss term)");
      // Gradients to "none" rather than zero: backward then writes them
      // instead of accumulating into a zeroed buffer (what PyTorch 2.0 made
      // the default); callbacks see the same values.
      for (auto& g : optimizer_->param_groups())
        for (auto& p : g.params()) p.mutable_grad().reset();
      // Stop before a non-finite loss or gradient reaches the weights (the
      // last checkpoint stays as it was), and say where it came from.
      const double lv = loss.item<double>();
      NNOPT_CHECK(std::isfinite(lv), ValueError, "train: loss became ", lv, " at epoch ",
                  st.epoch + 1, " step ", st.step_in_epoch + 1, non_finite_state(*model_),
                  " (lower the learning rate?)");
      loss.backward();
      for (auto& c : callbacks_) c->on_after_backward(st);
      if (!st.skip_step) {
        const std::string bad = non_finite_gradient(*model_, model_->parameters());
        NNOPT_CHECK(bad.empty(), ValueError, "train: ", bad, " at epoch ", st.epoch + 1, " step ",
                    st.step_in_epoch + 1, " (loss ", lv, "; lower the learning rate?)");
        optimizer_->step();
        ++st.global_step;
        ++steps;
      }
      int64_t b = batch.y.size(0);
      loss_sum += lv * b;
      correct += st.logits.detach().argmax(1).eq(batch.y).sum().item<int64_t>();
      seen += b;
      for (const auto& [k, v] : st.step_terms) term_sums[k] += v * b;
      for (auto& c : callbacks_) c->on_batch_end(st);
      if (bar.due(st.step_in_epoch + 1))
        bar.update(st.step_in_epoch + 1,
                   str_cat("loss ", std::fixed, std::setprecision(4), loss_sum / seen, " acc ",
                           std::setprecision(2), 100.0 * correct / seen, "%"));
    }
    EpochMetrics m;
    m.epoch = st.epoch;
    m.lr = st.lr;
    m.steps = steps;
    m.skipped = skipped;
    m.seconds = now_seconds() - t0;
    m.train_loss = seen ? loss_sum / seen : NAN;
    m.train_acc = seen ? static_cast<double>(correct) / seen : NAN;
    m.images_per_sec = m.seconds > 0 ? seen / m.seconds : 0;
    for (const auto& [k, v] : term_sums) m.extra["loss_" + k] = seen ? v / seen : NAN;
    m.val_loss = m.val_acc = NAN;
    if (val && val->size() > 0) {
      EvalResult ev = evaluate(model_, *val, opt_.eval_batch_size());
      m.val_loss = ev.loss;
      m.val_acc = ev.accuracy;
    }
    for (auto& c : callbacks_) c->on_epoch_end(st, m);
    bar.finish(str_cat("loss ", std::fixed, std::setprecision(4), m.train_loss, " acc ",
                       std::setprecision(2), 100 * m.train_acc, "%",
                       std::isfinite(m.val_acc) ? str_cat(" val ", std::setprecision(2),
                                                          100 * m.val_acc, "%")
                                                : std::string()));
    history.push_back(m);
    save_state(st, history);
  }
  for (auto& c : callbacks_) c->on_train_end(st);
  model_->eval();
  for (const auto& m : history)
    if (std::isfinite(m.val_acc)) result.best_val_acc = std::max(result.best_val_acc, m.val_acc);
  result.final_val_acc = history.empty() ? NAN : history.back().val_acc;
  result.seconds = now_seconds() - t_start;
  return result;
}

}  // namespace nnopt
