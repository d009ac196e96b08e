#include "nnopt/core/progress.h"

#include <unistd.h>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"

namespace nnopt {

ProgressMode progress_mode_from_name(const std::string& s) {
  if (s == "auto") return ProgressMode::kAuto;
  if (s == "bar") return ProgressMode::kBar;
  if (s == "lines") return ProgressMode::kLines;
  if (s == "off") return ProgressMode::kOff;
  throw ValueError(str_cat("progress: unknown mode '", s, "' (known: auto, bar, lines, off)"));
}

Progress::Progress(int64_t total, std::string label, ProgressMode mode, FILE* out,
                   double line_interval)
    : total_(std::max<int64_t>(total, 1)),
      label_(std::move(label)),
      mode_(mode),
      out_(out),
      interval_(line_interval) {
  if (mode_ == ProgressMode::kAuto) mode_ = isatty(fileno(out_)) ? ProgressMode::kBar : ProgressMode::kLines;
  start_ = now_seconds();
  last_print_ = start_;
}

bool Progress::due(int64_t done) const {
  if (mode_ == ProgressMode::kOff || finished_) return false;
  double every = mode_ == ProgressMode::kBar ? 0.2 : interval_;
  return done >= total_ || now_seconds() - last_print_ >= every;
}

void Progress::update(int64_t done, const std::string& extra) {
  if (!due(done)) return;
  last_print_ = now_seconds();
  print(done, extra, false);
}

void Progress::finish(const std::string& extra) {
  if (mode_ == ProgressMode::kOff || finished_) return;
  finished_ = true;
  print(total_, extra, true);
}

void Progress::print(int64_t done, const std::string& extra, bool final) {
  double elapsed = now_seconds() - start_;
  double frac = static_cast<double>(done) / total_;
  std::string eta = done > 0 && !final ? " ETA " + format_duration(elapsed / frac - elapsed)
                                       : " " + format_duration(elapsed);
  if (mode_ == ProgressMode::kBar) {
    constexpr int kWidth = 28;
    int fill = static_cast<int>(frac * kWidth);
    std::string bar(fill, '#');
    bar.resize(kWidth, '.');
    std::fprintf(out_, "\r\033[K%s [%s] %3d%% %lld/%lld%s %s%s", label_.c_str(), bar.c_str(),
                 static_cast<int>(frac * 100), static_cast<long long>(done),
                 static_cast<long long>(total_), eta.c_str(), extra.c_str(), final ? "\n" : "");
  } else {
    std::fprintf(out_, "%s %lld/%lld (%d%%)%s %s\n", label_.c_str(), static_cast<long long>(done),
                 static_cast<long long>(total_), static_cast<int>(frac * 100), eta.c_str(),
                 extra.c_str());
  }
  std::fflush(out_);
}

}  // namespace nnopt
