#include "nnopt/core/runtime.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <thread>

namespace nnopt {

int set_threads(int n) {
  if (n <= 0) n = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(n);
  return torch::get_num_threads();
}

int threads() { return torch::get_num_threads(); }

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
