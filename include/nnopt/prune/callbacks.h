#pragma once
// Pruning during training, as Trainer callbacks (train/trainer.h).
//
//   BnL1Callback               network slimming's sparsity penalty: adds
//                              lambda * sign(gamma) to every batch-norm scale's
//                              gradient (the subgradient of lambda * sum |gamma|,
//                              Liu et al. 2017), so that the bn criterion finds
//                              channels to remove
//   UnstructuredPruneCallback  magnitude masks at the schedule's sparsity,
//                              updated when the schedule's value changes (AGP,
//                              iterative, gradual); pruned weights stay zero
//   ChannelPruneCallback       channel pruning on the full-size model by
//                              zeroing: hard schedules (agp, gradual, iterative,
//                              oneshot) keep the removed channels at zero after
//                              every step and only add to them; "sfp" re-selects
//                              the channels after every epoch and lets the
//                              zeroed filters keep training (He et al. 2018).
//                              After training, prune_channels(model, deps(),
//                              plan()) removes them physically (the output is
//                              unchanged: they are zero).
#include <memory>
#include <string>

#include "nnopt/prune/criterion.h"
#include "nnopt/prune/schedule.h"
#include "nnopt/prune/surgery.h"
#include "nnopt/prune/target.h"
#include "nnopt/prune/unstructured.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

class BnL1Callback : public Callback {
 public:
  /// lambda >= 0 (Liu et al. use 1e-4 to 1e-5); ValueError otherwise.
  explicit BnL1Callback(double lambda);
  std::string name() const override { return "bn_l1"; }
  void on_after_backward(TrainState& st) override;

 private:
  double lambda_;
};

class UnstructuredPruneCallback : public Callback {
 public:
  /// Attaches all-ones masks to every conv2d/linear of `model` at once (so a
  /// resumed run finds the mask buffers). `global`: one threshold over all layers.
  UnstructuredPruneCallback(GraphModule model, PruneSchedule schedule, bool global);
  std::string name() const override { return "unstructured_prune"; }
  bool on_batch_begin(TrainState& st) override;
  void on_epoch_end(TrainState& st, EpochMetrics& m) override;
  std::string state_json() const override;
  void load_state_json(const std::string& s) override;
  double sparsity() const { return current_; }

 private:
  PruneSchedule schedule_;
  bool global_;
  double current_ = 0;
};

class ChannelPruneCallback : public Callback {
 public:
  /// `schedule` values are fractions of `metric` to remove (sparsity, params,
  /// macs) relative to the model as given; `data` feeds data-driven criteria.
  ChannelPruneCallback(GraphModule model, ImportancePtr importance, ImportanceData data,
                       PruneSchedule schedule, TargetKind metric, ChannelPlannerOptions planner);
  std::string name() const override { return "channel_prune"; }
  bool on_batch_begin(TrainState& st) override;
  void on_batch_end(TrainState& st) override;
  void on_epoch_end(TrainState& st, EpochMetrics& m) override;
  std::string state_json() const override;
  void load_state_json(const std::string& s) override;
  const DependencyGraph& deps() const { return deps_; }
  /// The channels removed (zeroed) so far.
  const ChannelPlan& plan() const { return plan_; }

 private:
  void replan(GraphModule& model, double value, bool keep_previous);
  DependencyGraph deps_;
  ImportancePtr importance_;
  ImportanceData data_;
  PruneSchedule schedule_;
  TargetKind metric_;
  ChannelPlannerOptions planner_;
  ChannelPlan plan_;
  double current_ = 0;
  double achieved_ = 0;
};

}  // namespace nnopt
