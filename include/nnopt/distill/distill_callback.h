#pragma once
// DistillCallback: knowledge distillation as a Callback of the one Trainer.
//
//   loss = ce_weight * CE(student, labels)          (Trainer's task loss, via TrainState::task_weight)
//        + sum of the distillation terms             (each already weighted: kd alpha,
//                                                     hint weight, at beta/2, sp gamma)
// The three weights of the usual formulation are separate: output (teacher-
// student logits) loss = kd's alpha, the student's own CE = ce_weight,
// hidden-representation losses = hint weight / at beta / sp gamma.
// ce_weight 0 is label-free distillation (labels are then unused).
//
// Each step the teacher runs (eval mode, no grad) on state.batch->x, the very
// (augmented) batch the student sees, or, for unaugmented batches, its outputs
// come from a per-sample cache filled in the first epoch; every term is logged in
// state.step_terms under the loss name ("kd", "hint", "at", "sp"), so
// metrics.jsonl has "loss_kd", ...
//
// Learned adapters (FitNets regressors) live in a holder module registered
// on the student as the submodule "__distill" when the callback is built:
// the Trainer builds its optimizer from model->parameters() in fit(), so they
// must be there before fit() and are then trained like any student weight,
// and training checkpoints carry them (resume works). Their tensor names start
// with "__", which load_model skips, so OUT/model.nnopt always loads as the
// plain student; on_train_end also removes the holder and rewrites
// OUT/model.nnopt without them. One callback serves one fit().
//
// Example:
//   nnopt::Trainer trainer(student, nnopt::TrainOptions(10));
//   trainer.add_callback(nnopt::make_distill_callback(
//       teacher, student, {nnopt::parse_loss_spec("kd:T=4,alpha=0.9")}));
//   trainer.fit(train, &val);
#include <torch/arg.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "nnopt/distill/distill_loss.h"
#include "nnopt/distill/teacher.h"
#include "nnopt/distill/teacher_cache.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

/// Name of the student submodule holding adapters (tensors "__distill.hint_0.weight", ...).
constexpr const char* kDistillHolder = "__distill";

struct DistillOptions {
  /// Weight of the student's cross-entropy with the labels; default -1 =
  /// 1 - alpha of the "kd" loss if there is one, else 1. 0 = label-free.
  TORCH_ARG(double, ce_weight) = -1;
  /// Cache the teacher's outputs (logits and the tapped features) per
  /// training sample (Batch::samples) and reuse them from the second time a
  /// sample is seen (distill/teacher_cache.h). Used only for unaugmented
  /// batches; otherwise the teacher runs every step. Default true.
  TORCH_ARG(bool, cache_teacher) = true;
  /// A cache to use instead of the callback's own (which is emptied at each
  /// fit): shared by runs with the same teacher and training set.
  TORCH_ARG(TeacherCachePtr, shared_cache) = nullptr;

 public:
  /// ValueError for a NaN or infinite weight.
  void validate() const;
};

class DistillCallback : public Callback {
 public:
  /// Binds every loss to the student and teacher graphs (checks taps, builds
  /// adapters) and attaches the adapters to `student`. Throws ValueError when
  /// the teacher's class count or input shape differs from the student's (the
  /// message names both values), for no losses, a repeated loss name or feature
  /// taps with an ensemble teacher; GraphError for a tap missing in either model.
  DistillCallback(GraphModule student, TeacherPtr teacher, std::vector<DistillLossPtr> losses,
                  DistillOptions opt = {});

  std::string name() const override { return "distill"; }
  /// Sets state.task_weight to ce_weight(); ValueError if state.model is not the student.
  void on_train_begin(TrainState& state) override;
  /// The student taps of all feature losses.
  std::vector<std::string> taps() const override { return student_taps_; }
  /// Runs the teacher on state.batch->x (or takes its cached logits) and sums the losses.
  torch::Tensor loss_term(TrainState& state) override;
  /// Detaches the adapters and rewrites OUT/model.nnopt without them.
  void on_train_end(TrainState& state) override;

  /// Teacher rows served from the cache / computed, since on_train_begin.
  int64_t cache_hits() const { return cache_hits_; }
  int64_t teacher_rows() const { return teacher_rows_; }
  /// The effective cross-entropy weight.
  double ce_weight() const { return ce_weight_; }
  const std::vector<DistillLossPtr>& losses() const { return losses_; }
  const Teacher& teacher() const { return *teacher_; }
  /// Removes the "__distill" holder from the student (idempotent).
  void detach();

 private:
  GraphModule student_;
  TeacherPtr teacher_;
  std::vector<DistillLossPtr> losses_;
  double ce_weight_ = 1;
  std::vector<std::string> student_taps_, teacher_taps_;
  std::shared_ptr<torch::nn::Module> holder_;
  bool attached_ = false;
  torch::Tensor teacher_logits(const Batch& batch, TensorMap& t_taps);
  bool cache_on_ = true, cache_shared_ = false;
  TeacherCachePtr cache_;
  int64_t cache_hits_ = 0, teacher_rows_ = 0;
};

/// The hook for other families (QAT, pruning, ...): distill from a live model,
/// e.g. the fp32 or unpruned network, into `student` (the model the Trainer
/// trains). Builds the losses from `specs` with make_distill_loss; default is
/// plain KD ("kd", T = 4, alpha = 0.9). Same errors as DistillCallback.
///
/// Example (QAT): trainer.add_callback(make_distill_callback(fp32_model, qat_model,
///                                         {parse_loss_spec("kd:T=2,alpha=0.5")}));
CallbackPtr make_distill_callback(GraphModule teacher, GraphModule student,
                                  std::vector<LossSpec> specs = {LossSpec{"kd", {}, {}}},
                                  DistillOptions opt = {});

}  // namespace nnopt
