#pragma once
// Pruning schedules: the fraction of the final target in effect at a step, as
// a pure function of the step (no state). Criteria say *which* channels or
// weights go; surgery removes them; the schedule says *how much* by when.
//
//   kind       value at step t (t0 = begin_step, t1 = end_step, F = final)
//   oneshot    F from t0 on (prune once, then fine-tune)
//   iterative  `cycles` equal prune-fine-tune rounds between t0 and t1; after
//              round k of n the kept fraction is (1 - F)^(k/n), i.e. each
//              round removes the same share of what is left (Han et al. 2015)
//   agp        Zhu & Gupta 2017 cubic: s_t = F + (s_i - F) (1 - (t - t0)/(t1 - t0))^3,
//              updated every `frequency` steps, F after t1
//   sfp        F from t0 on; soft filter pruning (He et al. 2018) re-selects and
//              zeroes the filters after every epoch while they keep training
//   gradual    linear ramp from s_i at t0 to F at t1, updated every
//              `frequency` steps (gradual channel pruning during training)
// Before t0 every schedule gives 0.
//
// Example:
//   auto s = nnopt::PruneSchedule("agp", 0.9).begin_step(0).end_step(3000).frequency(100);
//   double sparsity = s.at(global_step);
#include <torch/arg.h>

#include <cstdint>
#include <string>
#include <vector>

namespace nnopt {

struct PruneSchedule {
  PruneSchedule() = default;
  PruneSchedule(std::string kind, double target) : kind_(std::move(kind)), target_(target) {}
  /// "oneshot" | "iterative" | "agp" | "sfp" | "gradual"; default "oneshot".
  TORCH_ARG(std::string, kind) = "oneshot";
  /// Final value F in [0, 1); default 0.5.
  TORCH_ARG(double, target) = 0.5;
  /// agp / gradual: the value at begin_step (s_i), in [0, target]; default 0.
  TORCH_ARG(double, initial) = 0.0;
  /// First step of pruning; default 0.
  TORCH_ARG(int64_t, begin_step) = 0;
  /// Step at which the final value is reached (iterative, agp, gradual); default 1000.
  TORCH_ARG(int64_t, end_step) = 1000;
  /// agp / gradual: steps between updates (Δt); default 1.
  TORCH_ARG(int64_t, frequency) = 1;
  /// iterative: number of prune rounds; default 4.
  TORCH_ARG(int64_t, cycles) = 4;

 public:
  /// ValueError naming the bad field and its value (unknown kinds list the known ones).
  void validate() const;
  /// The value in effect at 0-based step `step`.
  double at(int64_t step) const;
  /// Steps at which the value changes, in [begin_step, end_step] (for logging and tests).
  std::vector<int64_t> update_steps() const;
};

/// {"oneshot", "iterative", "agp", "sfp", "gradual"}.
const std::vector<std::string>& prune_schedule_names();

}  // namespace nnopt
