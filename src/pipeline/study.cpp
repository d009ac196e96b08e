// Study and mean_std; see study.h.
#include "nnopt/pipeline/study.h"

#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/table.h"

namespace nnopt {
using json = nlohmann::json;

namespace {
json read_json(const std::string& path, const char* what) {
  try {
    return json::parse(read_file(path));
  } catch (const json::exception& e) {
    throw FileError(str_cat(path, ": ", what, " is not valid JSON (", e.what(), ")"));
  }
}
}  // namespace

Study::Study(std::string dir, json protocol) : dir_(std::move(dir)) {
  NNOPT_CHECK(!dir_.empty(), ValueError, "study: no output folder given");
  NNOPT_CHECK(protocol.is_object(), ValueError, "study: the protocol must be a JSON object");
  make_dirs(dir_);
  const std::string path = path_join(dir_, "study.json");
  if (path_exists(path)) {
    json saved = read_json(path, "the study protocol");
    NNOPT_CHECK(saved.is_object(), FileError, path, ": the study protocol is not a JSON object");
    for (auto it = protocol.begin(); it != protocol.end(); ++it) {
      json old = saved.value(it.key(), json());
      NNOPT_CHECK(old == it.value(), ValueError, dir_, " holds a study whose '", it.key(), "' was ",
                  old.dump(), ", now ", it.value().dump(),
                  "; use another --out folder to compare under another protocol");
    }
    for (auto it = saved.begin(); it != saved.end(); ++it)
      NNOPT_CHECK(protocol.contains(it.key()), ValueError, dir_, " holds a study with '", it.key(),
                  "' = ", it.value().dump(), ", which this one does not set; use another --out folder");
  } else {
    write_file_atomic(path, protocol.dump(2) + "\n");
  }
}

std::string Study::run_dir(const std::string& name) const { return path_join(dir_, name); }

bool Study::finished(const std::string& name) const {
  return path_exists(path_join(run_dir(name), "result.json"));
}

json Study::run(const std::string& name, const std::function<json(const std::string&)>& fn) {
  const std::string dir = run_dir(name);
  const std::string path = path_join(dir, "result.json");
  if (path_exists(path)) {
    ++skipped_;
    json r = read_json(path, "a run result");
    NNOPT_CHECK(r.is_object(), FileError, path, ": a run result must be a JSON object");
    return r;
  }
  make_dirs(dir);
  json r = fn(dir);
  NNOPT_CHECK(r.is_object(), ValueError, "study: run '", name, "' returned no JSON object");
  write_file_atomic(path, r.dump(2) + "\n");
  ++done_;
  return r;
}

MeanStd mean_std(const std::vector<double>& v) {
  NNOPT_CHECK(!v.empty(), ValueError, "mean_std: no values");
  MeanStd m;
  m.n = static_cast<int64_t>(v.size());
  for (double x : v) m.mean += x;
  m.mean /= static_cast<double>(m.n);
  if (m.n > 1) {
    double ss = 0;
    for (double x : v) ss += (x - m.mean) * (x - m.mean);
    m.std = std::sqrt(ss / static_cast<double>(m.n - 1));
  }
  return m;
}

std::string format_mean_std(const MeanStd& m, int digits) {
  return m.n > 1 ? fmt(m.mean, digits) + " ± " + fmt(m.std, digits) : fmt(m.mean, digits);
}

void write_study_outputs(const std::string& dir, const std::string& stem, const std::string& text,
                         const Table& table, const json& j) {
  write_file_atomic(path_join(dir, stem + ".txt"), text);
  write_file_atomic(path_join(dir, stem + ".csv"), table.to_csv());
  write_file_atomic(path_join(dir, stem + ".json"), j.dump(2) + "\n");
}

}  // namespace nnopt
