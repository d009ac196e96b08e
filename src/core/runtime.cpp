#include "nnopt/core/runtime.h"

#include <torch/torch.h>

#include <malloc.h>
#include <omp.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <cstdio>
#include <thread>

namespace nnopt {

int set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  return torch::get_num_threads();
}

bool tune_allocator() {
  static const bool applied = [] {
    const char* env = std::getenv("NNOPT_MALLOC");
    if (env != nullptr && std::strcmp(env, "default") == 0) return false;
    // Fixed values also switch off glibc's dynamic threshold adjustment.
    bool ok = mallopt(M_MMAP_THRESHOLD, 32 << 20) == 1;
    ok = mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && ok;
    return ok;
  }();
  return applied;
}

int threads() { return torch::get_num_threads(); }

ScopedRunThreads::ScopedRunThreads(int n) {
  if (n <= 0) return;
  const int cur = omp_get_max_threads();
  if (n == cur) return;
  old_ = cur;
  omp_set_num_threads(n);
}

ScopedRunThreads::~ScopedRunThreads() {
  if (old_ > 0) omp_set_num_threads(old_);
}

void seed_everything(uint64_t seed) { torch::manual_seed(seed); }

double now_seconds() {
  using namespace std::chrono;
  return duration<double>(steady_clock::now().time_since_epoch()).count();
}

std::string format_duration(double s) {
  char buf[64];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1f s", s);
  } else if (s < 3600) {
    int m = static_cast<int>(s / 60);
    std::snprintf(buf, sizeof buf, "%d min %02d s", m, static_cast<int>(s - 60 * m));
  } else {
    int h = static_cast<int>(s / 3600);
    std::snprintf(buf, sizeof buf, "%d h %02d min", h, static_cast<int>((s - 3600 * h) / 60));
  }
  return buf;
}

}  // namespace nnopt
