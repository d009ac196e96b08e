#include "nnopt/prune/schedule.h"

#include <algorithm>
#include <cmath>

#include "nnopt/core/error.h"

namespace nnopt {

const std::vector<std::string>& prune_schedule_names() {
  static const std::vector<std::string> names = {"oneshot", "iterative", "agp", "sfp", "gradual"};
  return names;
}

void PruneSchedule::validate() const {
  const auto& names = prune_schedule_names();
  if (std::find(names.begin(), names.end(), kind()) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw ValueError(str_cat("unknown pruning schedule '", kind(), "' (known: ", known, ")"));
  }
  NNOPT_CHECK(target() >= 0 && target() < 1, ValueError, "schedule target must be in [0, 1), got ",
              target());
  NNOPT_CHECK(initial() >= 0 && initial() <= target(), ValueError,
              "schedule initial must be in [0, target = ", target(), "], got ", initial());
  NNOPT_CHECK(begin_step() >= 0, ValueError, "schedule begin_step must be >= 0, got ", begin_step());
  bool ramps = kind() == "iterative" || kind() == "agp" || kind() == "gradual";
  NNOPT_CHECK(!ramps || end_step() > begin_step(), ValueError, "schedule '", kind(),
              "': end_step (", end_step(), ") must be after begin_step (", begin_step(), ")");
  NNOPT_CHECK(frequency() >= 1, ValueError, "schedule frequency must be >= 1, got ", frequency());
  NNOPT_CHECK(cycles() >= 1, ValueError, "schedule cycles must be >= 1, got ", cycles());
}

double PruneSchedule::at(int64_t step) const {
  validate();
  const double F = target();
  if (step < begin_step()) return 0.0;
  if (kind() == "oneshot" || kind() == "sfp") return F;
  const double t0 = static_cast<double>(begin_step()), t1 = static_cast<double>(end_step());
  if (kind() == "iterative") {
    // Round k (1-based) starts at t0 + (k - 1) * (t1 - t0) / n.
    const double period = (t1 - t0) / static_cast<double>(cycles());
    int64_t k = std::min<int64_t>(cycles(), static_cast<int64_t>(std::floor((step - t0) / period)) + 1);
    return 1.0 - std::pow(1.0 - F, static_cast<double>(k) / cycles());
  }
  if (step >= end_step()) return F;
  // agp / gradual: quantized to update steps t0 + k * frequency.
  const int64_t q = begin_step() + (step - begin_step()) / frequency() * frequency();
  const double p = (static_cast<double>(q) - t0) / (t1 - t0);  // progress in [0, 1)
  if (kind() == "agp") return F + (initial() - F) * std::pow(1.0 - p, 3);
  return initial() + (F - initial()) * p;  // gradual
}

std::vector<int64_t> PruneSchedule::update_steps() const {
  validate();
  std::vector<int64_t> out;
  double last = 0;
  int64_t stop = (kind() == "oneshot" || kind() == "sfp") ? begin_step() : end_step();
  for (int64_t t = begin_step(); t <= stop; ++t) {
    double v = at(t);
    if (t == begin_step() || v != last) out.push_back(t);
    last = v;
  }
  return out;
}

}  // namespace nnopt
