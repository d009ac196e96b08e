#pragma once
// Process-wide runtime settings: threads, seeds, timing.
#include <cstdint>
#include <string>

namespace nnopt {

/// Sets LibTorch's intra-op threads. n <= 0 means the machine's core count
/// (LibTorch on Debian starts with 1). Returns the count in effect.
int set_threads(int n);
/// Makes glibc keep freed tensor memory in the process instead of returning
/// it to the system after every free (mmap threshold 32 MiB, trim threshold
/// 1 GiB). Without it each training step maps and unmaps its activation
/// buffers and page-faults them in again: lenet5 training on 2 cores ran 13-15k
/// images/s, with it 19-20k (docs/results.md). Idempotent; the Trainer and the
/// CLI call it. NNOPT_MALLOC=default in the environment leaves glibc alone.
/// Returns whether the settings were applied.
bool tune_allocator();
/// The intra-op thread count in effect.
int threads();
/// Sets the thread count for a scope (n <= 0: leave it), restores it after.
class ScopedThreads {
 public:
  explicit ScopedThreads(int n) : old_(threads()) {
    if (n > 0) set_threads(n);
  }
  ~ScopedThreads() { set_threads(old_); }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int old_;
};
/// Runs the scope's parallel work on n threads (n <= 0: leave it) by
/// setting only the calling thread's OpenMP thread count, which LibTorch's
/// parallel_for, onednn and OpenBLAS (OpenMP build) read on every call.
/// Unlike set_threads (at::set_num_threads rebuilds the thread pool and
/// clears onednn's primitive cache) it costs about a microsecond, so a model
/// can switch on each forward pass (GraphModule::set_run_threads).
class ScopedRunThreads {
 public:
  explicit ScopedRunThreads(int n);
  ~ScopedRunThreads();
  ScopedRunThreads(const ScopedRunThreads&) = delete;
  ScopedRunThreads& operator=(const ScopedRunThreads&) = delete;

 private:
  int old_ = 0;  ///< 0: nothing to restore
};
/// Seeds the global torch RNG (dropout, initialization).
void seed_everything(uint64_t seed);
/// Monotonic seconds since an arbitrary start.
double now_seconds();
/// "12.3 s", "4 min 05 s", "1 h 02 min".
std::string format_duration(double seconds);

}  // namespace nnopt
