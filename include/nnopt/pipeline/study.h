#pragma once
// Study: the one protocol every `nnopt compare ...` runs under.
//
// A study is a folder holding many runs (method x setting x seed) of one
// protocol. The protocol (data, epochs, optimizer, seeds, models: everything
// that must be equal across the runs) is written to DIR/study.json by the
// first invocation; a later invocation with another protocol is refused, so
// one table never mixes settings. Each run lives in DIR/<run name>/ and is
// finished when DIR/<run name>/result.json exists (written atomically, last):
// re-running the same command skips finished runs and resumes an interrupted
// one from its training checkpoint (the run function gets resume = true).
//
// Example:
//   nnopt::Study study("runs/cmp", {{"epochs", 5}, {"seeds", {0, 1, 2}}});
//   nlohmann::json r = study.run("kd/seed0", [&](const std::string& dir) {
//     ... train into dir with TrainOptions().out_dir(dir).resume(true) ...
//     return nlohmann::json{{"test_acc", acc}};
//   });
#include <nlohmann/json.hpp>

#include <functional>
#include <string>
#include <vector>

namespace nnopt {

class Study {
 public:
  /// Creates `dir` if needed. ValueError if dir/study.json holds a different
  /// protocol (naming the first differing key and both values); FileError if
  /// it is unreadable.
  Study(std::string dir, nlohmann::json protocol);

  const std::string& dir() const { return dir_; }
  /// dir/<name>; names are relative paths such as "kd/seed0".
  std::string run_dir(const std::string& name) const;
  /// Whether run `name` has its result.json.
  bool finished(const std::string& name) const;
  /// The stored result of run `name`, or fn(run_dir) stored as its result.json
  /// (which must be a JSON object). `fn` must be able to continue a partial run.
  nlohmann::json run(const std::string& name,
                     const std::function<nlohmann::json(const std::string& run_dir)>& fn);
  /// Runs finished by this object's run() calls (not counting skipped ones).
  int64_t runs_done() const { return done_; }
  int64_t runs_skipped() const { return skipped_; }

 private:
  std::string dir_;
  int64_t done_ = 0, skipped_ = 0;
};

/// Mean and sample standard deviation (n - 1; 0 for a single value).
struct MeanStd {
  double mean = 0, std = 0;
  int64_t n = 0;
};
/// ValueError for an empty list.
MeanStd mean_std(const std::vector<double>& values);
/// "91.23 ± 0.15" (std omitted when n == 1).
std::string format_mean_std(const MeanStd& m, int digits = 2);

class Table;
/// Writes a study's outcome as dir/<stem>.txt (`text`), dir/<stem>.csv (the
/// table) and dir/<stem>.json (`j`, indented), each atomically.
void write_study_outputs(const std::string& dir, const std::string& stem, const std::string& text,
                         const Table& table, const nlohmann::json& j);

}  // namespace nnopt
