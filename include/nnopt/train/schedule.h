#pragma once
// Learning-rate schedules: pure functions of the step, no state.
#include <cstdint>
#include <string>
#include <vector>

namespace nnopt {

struct LrSchedule {
  std::string kind = "cosine";     ///< "constant" | "step" | "multistep" | "cosine"
  double base_lr = 0.1;
  double min_lr = 0.0;             ///< cosine floor
  int64_t warmup_steps = 0;        ///< linear warm-up from base_lr/warmup_steps to base_lr
  int64_t total_steps = 1;         ///< steps of the whole run (cosine horizon)
  int64_t steps_per_epoch = 1;     ///< for step / multistep
  int64_t step_size = 30;          ///< epochs between decays ("step")
  std::vector<int64_t> milestones; ///< epochs at which to decay ("multistep")
  double gamma = 0.1;              ///< decay factor ("step", "multistep")

  /// Throws ValueError naming the bad field.
  void validate() const;
  /// Learning rate for 0-based `step`.
  double at(int64_t step) const;
};

}  // namespace nnopt
