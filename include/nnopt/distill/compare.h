#pragma once
// compare_distill: student alone vs each distillation method, several seeds,
// one protocol (nnopt compare distill). Every method trains the same student
// architecture from the same per-seed initialisation, on the same data order,
// for the same epochs with the same TrainOptions; only the loss differs:
//   alone       cross-entropy with the labels
//   kd          Hinton KD (the `kd` spec, default kd:T=4,alpha=0.9) + (1 - alpha) CE
//   kd-nolabel  KD alone (alpha 1, ce weight 0): no labels used
//   hint        CE + FitNets hint on the feature pairs (learned 1x1 adapter)
//   at          CE + attention transfer on the feature pairs
//   sp          CE + similarity-preserving loss on the feature pairs
//   ensemble    KD from the averaged members of `ensemble` + (1 - alpha) CE
// The runs go through a Study (pipeline/study.h): finished runs are skipped
// and an interrupted one resumes when the same command is given again.
#include <torch/arg.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nnopt/core/table.h"
#include "nnopt/data/dataset.h"
#include "nnopt/distill/distill_loss.h"
#include "nnopt/ir/graph.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

using StringList = std::vector<std::string>;
using SeedList = std::vector<int64_t>;

struct DistillCompareOptions {
  /// Teacher checkpoint (.nnopt, or TorchScript .pt).
  TORCH_ARG(std::string, teacher);
  /// Members of the ensemble teacher (method "ensemble"); may include `teacher`.
  TORCH_ARG(StringList, ensemble) = {};
  /// "logits" or "probs" (default): how the ensemble averages.
  TORCH_ARG(std::string, ensemble_mode) = "probs";
  /// Zoo model name (fresh student per seed) or a checkpoint to start from.
  TORCH_ARG(std::string, student) = "lenet5";
  TORCH_ARG(double, width) = 1.0;
  TORCH_ARG(int64_t, depth) = 20;
  /// Methods in table order; empty = all (without "ensemble" if no ensemble is given).
  TORCH_ARG(StringList, methods) = {};
  /// The KD spec of kd, kd-nolabel (alpha forced to 1) and ensemble.
  TORCH_ARG(std::string, kd) = "kd:T=4,alpha=0.9";
  /// teacher_tap:student_tap pairs of hint / at / sp; empty = the last
  /// feature map of each model (default_feature_pair).
  TORCH_ARG(StringList, pairs) = {};
  /// One run per method per seed; default 0, 1, 2.
  TORCH_ARG(SeedList, seeds) = SeedList{0, 1, 2};
  /// The training recipe of every run (seed and out_dir are set per run).
  TORCH_ARG(TrainOptions, train) = TrainOptions();
  /// The study folder.
  TORCH_ARG(std::string, out_dir);

 public:
  /// ValueError for an unknown method, no seeds or repeated seeds, "ensemble"
  /// without ensemble members, a bad kd spec, no teacher or out_dir.
  void validate() const;
};

/// alone, kd, kd-nolabel, hint, at, sp, ensemble.
const StringList& distill_compare_methods();

/// The pair used when none is given: the last node of each graph whose
/// output is a feature map [C, H, W] (before pooling to a vector).
/// ValueError if either graph has none.
TapPair default_feature_pair(const Graph& teacher, const Graph& student);

struct DistillCompareResult {
  Table table{{"method"}};
  nlohmann::json json;  ///< protocol, rows (mean, std, per-seed accuracies, seconds)
};

/// Runs (or resumes) the study and builds the table: test accuracy mean ±
/// std over the seeds, the difference to "alone" in points, the per-seed
/// values and the mean training time per run; the best mean is marked '*'.
/// Also writes out_dir/compare.{txt,csv,json}.
DistillCompareResult compare_distill(const DistillCompareOptions& opt, const Dataset& train,
                                     const Dataset& test);

}  // namespace nnopt
