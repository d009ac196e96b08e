// DistillCallback and make_distill_callback; see distill_callback.h.
#include "nnopt/distill/distill_callback.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/nn/checkpoint.h"

namespace nnopt {

void DistillOptions::validate() const {
  NNOPT_CHECK(std::isfinite(ce_weight()), ValueError, "distill: ce_weight must be finite, got ",
              ce_weight());
}

DistillCallback::DistillCallback(GraphModule student, TeacherPtr teacher,
                                 std::vector<DistillLossPtr> losses, DistillOptions opt)
    : student_(std::move(student)), teacher_(std::move(teacher)), losses_(std::move(losses)) {
  opt.validate();
  NNOPT_CHECK(!student_.is_empty(), ValueError, "distill: no student model");
  NNOPT_CHECK(teacher_, ValueError, "distill: no teacher");
  NNOPT_CHECK(!losses_.empty(), ValueError, "distill: no distillation loss given");
  for (const auto& m : teacher_->members())
    NNOPT_CHECK(m.ptr() != student_.ptr(), ValueError,
                "distill: the teacher is the student itself (use a copy, e.g. the trained model loaded again)");
  const Graph& sg = student_->graph();
  NNOPT_CHECK(sg.output_shape().size() == 1, ValueError, "distill: the student outputs ",
              c10::IntArrayRef(sg.output_shape()), " per sample, not class logits [K]");
  NNOPT_CHECK(teacher_->num_classes() == sg.output_shape()[0], ValueError,
              "distill: the teacher has ", teacher_->num_classes(), " classes but the student has ",
              sg.output_shape()[0]);
  NNOPT_CHECK(teacher_->input_shape() == sg.input_shape(), ValueError,
              "distill: the teacher takes input ", c10::IntArrayRef(teacher_->input_shape()),
              " but the student takes ", c10::IntArrayRef(sg.input_shape()));

  holder_ = std::make_shared<torch::nn::Module>("DistillAdapters");
  std::set<std::string> names, s_taps, t_taps;
  double soft = -1;
  for (const auto& loss : losses_) {
    NNOPT_CHECK(loss, ValueError, "distill: a loss is null");
    NNOPT_CHECK(names.insert(loss->name()).second, ValueError, "distill: loss '", loss->name(),
                "' is given twice (give all its tap pairs to one loss)");
    auto pairs = loss->tap_pairs();
    NNOPT_CHECK(pairs.empty() || teacher_->size() == 1, ValueError, "distill: ", loss->name(),
                " compares features and needs a single teacher, but the ensemble has ",
                teacher_->size(), " models");
    loss->bind(sg, teacher_->graph(), *holder_);
    for (const auto& p : pairs) {
      if (s_taps.insert(p.student).second) student_taps_.push_back(p.student);
      if (t_taps.insert(p.teacher).second) teacher_taps_.push_back(p.teacher);
    }
    if (loss->soft_target_weight() >= 0) soft = loss->soft_target_weight();
  }
  cache_on_ = opt.cache_teacher();
  cache_shared_ = opt.shared_cache() != nullptr;
  cache_ = opt.shared_cache();
  ce_weight_ = opt.ce_weight() >= 0 ? opt.ce_weight() : soft >= 0 ? 1.0 - soft : 1.0;

  if (!holder_->children().empty()) {
    NNOPT_CHECK(!student_->named_children().contains(kDistillHolder), ValueError,
                "distill: the student already carries distillation adapters ('", kDistillHolder,
                "'); detach the previous DistillCallback first");
    student_->register_module(kDistillHolder, holder_);
    attached_ = true;
  }
}

void DistillCallback::on_train_begin(TrainState& state) {
  NNOPT_CHECK(state.model.ptr() == student_.ptr(), ValueError,
              "distill: the Trainer trains a different model than the callback's student");
  state.task_weight = ce_weight_;
  // A new fit may train on other data: positions would mean other samples.
  if (cache_on_ && !cache_shared_) cache_ = std::make_shared<TeacherCache>();
  cache_hits_ = teacher_rows_ = 0;
}

torch::Tensor DistillCallback::teacher_logits(const Batch& batch, TensorMap& t_taps) {
  const bool cacheable = cache_on_ && !batch.augmented && batch.samples.defined() &&
                         batch.samples.numel() == batch.x.size(0);
  if (!cacheable) {
    teacher_rows_ += batch.x.size(0);
    // The same (augmented) batch the student saw; eval mode, no grad (see Teacher::forward).
    return teacher_->forward(batch.x, teacher_taps_, t_taps);
  }
  if (!cache_) cache_ = std::make_shared<TeacherCache>();  // used outside Trainer::fit
  const int64_t hits = cache_->hits(), computed = cache_->computed();
  torch::Tensor z = cache_->forward(*teacher_, batch.x, batch.samples, teacher_taps_, t_taps);
  cache_hits_ += cache_->hits() - hits;
  teacher_rows_ += cache_->computed() - computed;
  return z;
}

torch::Tensor DistillCallback::loss_term(TrainState& state) {
  NNOPT_CHECK(state.batch && state.logits.defined(), ValueError,
              "distill: loss_term called without a batch");
  TensorMap t_taps;
  torch::Tensor t_logits = teacher_logits(*state.batch, t_taps);
  DistillContext ctx{state.logits, t_logits, &state.taps, &t_taps};
  torch::Tensor total;
  for (const auto& loss : losses_) {
    torch::Tensor v = loss->forward(ctx);
    state.step_terms[loss->name()] = v.item<double>();
    total = total.defined() ? total + v : v;
  }
  return total;
}

void DistillCallback::detach() {
  if (!attached_) return;
  student_->unregister_module(kDistillHolder);
  attached_ = false;
}

void DistillCallback::on_train_end(TrainState& state) {
  bool had_adapters = attached_;
  detach();
  if (!had_adapters || !state.options || state.options->out_dir().empty()) return;
  // The Trainer saved the model with the adapters; load_model skips "__" names
  // anyway, but the plain student is what belongs in model.nnopt.
  std::string path = path_join(state.options->out_dir(), "model.nnopt");
  if (!path_exists(path)) return;
  Checkpoint ck = load_checkpoint(path);
  std::string prefix = std::string(kDistillHolder) + ".";
  for (auto it = ck.tensors.begin(); it != ck.tensors.end();)
    it = it->first.rfind(prefix, 0) == 0 ? ck.tensors.erase(it) : std::next(it);
  save_checkpoint(path, ck);
}

CallbackPtr make_distill_callback(GraphModule teacher, GraphModule student,
                                  std::vector<LossSpec> specs, DistillOptions opt) {
  std::vector<DistillLossPtr> losses;
  for (const auto& s : specs) losses.push_back(make_distill_loss(s));
  return std::make_shared<DistillCallback>(std::move(student),
                                           std::make_shared<Teacher>(std::move(teacher)),
                                           std::move(losses), std::move(opt));
}

}  // namespace nnopt
