#include "nnopt/train/schedule.h"

#include <cmath>

#include "nnopt/core/error.h"

namespace nnopt {

void LrSchedule::validate() const {
  NNOPT_CHECK(kind == "constant" || kind == "step" || kind == "multistep" || kind == "cosine",
              ValueError, "schedule: unknown kind '", kind,
              "' (known: constant, step, multistep, cosine)");
  NNOPT_CHECK(base_lr > 0 && std::isfinite(base_lr), ValueError, "lr must be > 0, got ", base_lr);
  NNOPT_CHECK(min_lr >= 0 && min_lr <= base_lr, ValueError, "min_lr must be in [0, lr], got ",
              min_lr);
  NNOPT_CHECK(warmup_steps >= 0, ValueError, "warmup must be >= 0, got ", warmup_steps);
  NNOPT_CHECK(total_steps > 0, ValueError, "schedule: total_steps must be > 0, got ", total_steps);
  NNOPT_CHECK(steps_per_epoch > 0, ValueError, "schedule: steps_per_epoch must be > 0");
  NNOPT_CHECK(step_size > 0, ValueError, "step_size must be > 0, got ", step_size);
  NNOPT_CHECK(gamma > 0 && gamma <= 1, ValueError, "gamma must be in (0, 1], got ", gamma);
}

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps)
    return base_lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  int64_t epoch = step / steps_per_epoch;
  if (kind == "constant") return base_lr;
  if (kind == "step") return base_lr * std::pow(gamma, static_cast<double>(epoch / step_size));
  if (kind == "multistep") {
    int k = 0;
    for (auto m : milestones) k += epoch >= m;
    return base_lr * std::pow(gamma, k);
  }
  // cosine from the end of warm-up to total_steps
  double span = static_cast<double>(std::max<int64_t>(total_steps - warmup_steps, 1));
  double t = std::min(1.0, static_cast<double>(step - warmup_steps) / span);
  return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + std::cos(M_PI * t));
}

}  // namespace nnopt
