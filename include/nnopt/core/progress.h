#pragma once
// Progress reporting for long jobs: a bar with ETA on a terminal, plain lines
// (at most one every `line_interval` seconds, plus the last) otherwise.
#include <cstdint>
#include <cstdio>
#include <string>

namespace nnopt {

enum class ProgressMode { kAuto, kBar, kLines, kOff };
/// "auto" | "bar" | "lines" | "off"; throws ValueError otherwise.
ProgressMode progress_mode_from_name(const std::string& s);

class Progress {
 public:
  /// `total` steps; `label` is printed in front ("epoch 3/10").
  Progress(int64_t total, std::string label, ProgressMode mode = ProgressMode::kAuto,
           FILE* out = stderr, double line_interval = 10.0);
  /// True if update(done) would print now (lets callers skip formatting).
  bool due(int64_t done) const;
  /// Marks `done` steps complete; `extra` is appended ("loss 0.42 acc 91.3%").
  void update(int64_t done, const std::string& extra = "");
  /// Prints the final state and a newline.
  void finish(const std::string& extra = "");

 private:
  void print(int64_t done, const std::string& extra, bool final);
  int64_t total_;
  std::string label_;
  ProgressMode mode_;
  FILE* out_;
  double interval_;
  double start_, last_print_;
  bool finished_ = false;
};

}  // namespace nnopt
