#pragma once
// Process-wide runtime settings: threads, seeds, timing.
#include <cstdint>
#include <string>

namespace nnopt {

/// Sets LibTorch's intra-op threads. n <= 0 means the machine's core count
/// (LibTorch on Debian starts with 1). Returns the count in effect.
int set_threads(int n);
/// The intra-op thread count in effect.
int threads();
/// Seeds the global torch RNG (dropout, initialization).
void seed_everything(uint64_t seed);
/// Monotonic seconds since an arbitrary start.
double now_seconds();
/// "12.3 s", "4 min 05 s", "1 h 02 min".
std::string format_duration(double seconds);

}  // namespace nnopt
