#pragma once
// The trainer is the hub of nnopt: every family that trains (distillation,
// QAT, pruning fine-tune, E2-Train, NAS supernets) plugs into this one loop as
// a Callback instead of copying it.
//
// One step:  on_batch_begin (may skip the batch)
//            forward with the taps that callbacks ask for
//            loss = task_weight * cross_entropy + sum of callbacks' loss_term
//            backward; on_after_backward (may edit gradients or skip the step)
//            optimizer step; on_batch_end
// Per epoch: validation, metrics line (JSON) in out_dir/metrics.jsonl, and a
// resumable checkpoint out_dir/checkpoint.nnopt; out_dir/model.nnopt holds the
// latest model. Shuffling, augmentation and the torch RNG of epoch e depend
// only on (seed, e), so a run resumed from the epoch-e checkpoint ends with
// the same weights as a run that was never interrupted.
#include <torch/arg.h>
#include <torch/torch.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/data/loader.h"
#include "nnopt/nn/graph_module.h"

namespace nnopt {

struct TrainOptions {
  TrainOptions() = default;
  explicit TrainOptions(int64_t epochs) : epochs_(epochs) {}
  /// Number of epochs (>= 1).
  TORCH_ARG(int64_t, epochs) = 10;
  /// Mini-batch size.
  TORCH_ARG(int64_t, batch_size) = 128;
  /// Batch size for validation / evaluation.
  TORCH_ARG(int64_t, eval_batch_size) = 1000;
  /// "sgd" | "adam" | "adamw".
  TORCH_ARG(std::string, optimizer) = "sgd";
  /// Peak learning rate.
  TORCH_ARG(double, lr) = 0.1;
  /// SGD momentum.
  TORCH_ARG(double, momentum) = 0.9;
  /// Nesterov momentum (SGD).
  TORCH_ARG(bool, nesterov) = false;
  /// L2 weight decay (decoupled for adamw).
  TORCH_ARG(double, weight_decay) = 5e-4;
  /// "constant" | "step" | "multistep" | "cosine".
  TORCH_ARG(std::string, schedule) = "cosine";
  /// Linear warm-up length in epochs (fractions allowed).
  TORCH_ARG(double, warmup_epochs) = 0.0;
  /// "step": decay every step_size epochs by gamma.
  TORCH_ARG(int64_t, step_size) = 30;
  /// "multistep": epochs at which to decay by gamma.
  TORCH_ARG(std::vector<int64_t>, milestones) = {};
  /// Decay factor for "step" and "multistep".
  TORCH_ARG(double, gamma) = 0.1;
  /// Label smoothing of the cross-entropy task loss, in [0, 1).
  TORCH_ARG(double, label_smoothing) = 0.0;
  /// Random crop after zero padding by this many pixels (0 = off).
  TORCH_ARG(int64_t, crop_padding) = 0;
  /// Random horizontal flip.
  TORCH_ARG(bool, hflip) = false;
  /// Seed for initialization, shuffling, augmentation and dropout.
  TORCH_ARG(uint64_t, seed) = 0;
  /// Folder for metrics.jsonl, checkpoint.nnopt and model.nnopt ("" = write nothing).
  TORCH_ARG(std::string, out_dir) = "";
  /// Continue from out_dir/checkpoint.nnopt if it exists.
  TORCH_ARG(bool, resume) = false;
  /// "auto" | "bar" | "lines" | "off".
  TORCH_ARG(std::string, progress) = "auto";
  /// Prepare the next batch on a background thread. Off by default: on the
  /// 2-core machine the extra thread competes with the compute threads
  /// (lenet5, batch 128: 18.4k img/s without, 14.5k with; docs/results.md).
  TORCH_ARG(bool, prefetch) = false;
  /// Memory order of the activations while training and validating:
  /// "channels_last" (NHWC; onednn convolves without reordering every
  /// activation, measured faster in docs/results.md) or "contiguous" (NCHW,
  /// LibTorch's default). Values agree up to float rounding.
  TORCH_ARG(std::string, memory_format) = "channels_last";
  /// Stop each epoch after this many batches (0 = all); for quick runs and tests.
  TORCH_ARG(int64_t, max_batches) = 0;

 public:  // TORCH_ARG leaves the section private
  /// Throws ValueError naming the bad option and its value.
  void validate() const;
};

/// The options that change results (all but progress and prefetch) as JSON:
/// what a resumed run must match, and a study's protocol.
nlohmann::json train_options_json(const TrainOptions& o);

/// Metrics of one epoch (also one line of metrics.jsonl).
struct EpochMetrics {
  int64_t epoch = 0;  ///< 0-based
  double lr = 0;      ///< learning rate at the end of the epoch
  double train_loss = 0, train_acc = 0;
  double val_loss = 0, val_acc = 0;  ///< NaN when there is no validation set
  int64_t steps = 0;                 ///< optimizer steps taken in the epoch
  int64_t skipped = 0;               ///< batches skipped by callbacks
  double seconds = 0;
  double images_per_sec = 0;
  std::map<std::string, double> extra;  ///< loss terms and callback metrics
  std::string to_json() const;
};

struct EvalResult {
  double loss = 0;
  double accuracy = 0;  ///< fraction in [0, 1]
  int64_t count = 0;
};

class Trainer;

/// Everything a callback may read or change during training.
struct TrainState {
  GraphModule model = nullptr;
  torch::optim::Optimizer* optimizer = nullptr;
  const TrainOptions* options = nullptr;
  int64_t epoch = 0;
  int64_t step_in_epoch = 0;   ///< batch index within the epoch
  int64_t global_step = 0;     ///< optimizer steps taken so far in the run
  int64_t steps_per_epoch = 0;
  double lr = 0;
  Batch* batch = nullptr;      ///< the current batch
  torch::Tensor logits;        ///< [B, classes] of the current step
  TensorMap taps;              ///< the outputs callbacks asked for
  double task_weight = 1.0;    ///< weight of the cross-entropy task loss (0 = teacher only)
  bool skip_step = false;      ///< set in on_after_backward to skip the optimizer step
  bool stop = false;           ///< set to end training after this epoch
  std::map<std::string, double> step_terms;  ///< loss terms of this step, for logging
};

class Callback {
 public:
  virtual ~Callback() = default;
  /// Unique name; used as the key of this callback's state in checkpoints.
  virtual std::string name() const = 0;
  virtual void on_train_begin(TrainState&) {}
  virtual void on_epoch_begin(TrainState&) {}
  /// Return false to skip this batch (no forward, no step): mini-batch dropping.
  virtual bool on_batch_begin(TrainState&) { return true; }
  /// Node outputs this callback needs in loss_term (distillation hints).
  virtual std::vector<std::string> taps() const { return {}; }
  /// An extra scalar loss term; undefined tensor for none. Report the value
  /// under a name in state.step_terms for logging.
  virtual torch::Tensor loss_term(TrainState&) { return {}; }
  /// After backward, before the step: edit gradients (sign, freezing) or set skip_step.
  virtual void on_after_backward(TrainState&) {}
  virtual void on_batch_end(TrainState&) {}
  /// May add metrics to m.extra and set state.stop.
  virtual void on_epoch_end(TrainState&, EpochMetrics&) {}
  virtual void on_train_end(TrainState&) {}
  /// Resumable state as JSON; restored before on_train_begin on resume.
  virtual std::string state_json() const { return "{}"; }
  virtual void load_state_json(const std::string&) {}
};
using CallbackPtr = std::shared_ptr<Callback>;

struct TrainResult {
  std::vector<EpochMetrics> history;
  double best_val_acc = 0;
  double final_val_acc = 0;
  double seconds = 0;        ///< wall time of this process's part of the run
  int64_t resumed_from = -1; ///< epoch the run resumed at, -1 if it started fresh
};

class Trainer {
 public:
  /// Validates the options and calls tune_allocator() (core/runtime.h).
  Trainer(GraphModule model, TrainOptions options);
  void add_callback(CallbackPtr cb);
  /// Trains on `train`, validating on `val` (if given) after each epoch.
  TrainResult fit(const Dataset& train, const Dataset* val = nullptr);
  GraphModule model() const { return model_; }
  const TrainOptions& options() const { return opt_; }

 private:
  std::unique_ptr<torch::optim::Optimizer> make_optimizer() const;
  void save_state(const TrainState& st, const std::vector<EpochMetrics>& history) const;
  bool load_state(TrainState& st, std::vector<EpochMetrics>& history);
  GraphModule model_;
  TrainOptions opt_;
  std::vector<CallbackPtr> callbacks_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
};

/// Loss and top-1 accuracy in eval mode without gradients; restores the
/// module's training flag afterwards.
EvalResult evaluate(GraphModule& model, const Dataset& data, int64_t batch_size = 1000);

/// The same loop for any forward function (teachers, integer models):
/// [B, *sample] -> [B, classes] logits, called without gradients.
EvalResult evaluate_logits(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                           const Dataset& data, int64_t batch_size = 1000);

/// Cross-entropy with optional label smoothing. [B, C], [B] -> scalar
torch::Tensor task_loss(const torch::Tensor& logits, const torch::Tensor& target,
                        double label_smoothing = 0.0);

}  // namespace nnopt
