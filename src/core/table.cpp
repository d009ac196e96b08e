#include "nnopt/core/table.h"

#include <cmath>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nnopt/core/error.h"

namespace nnopt {

namespace {
bool is_number(const std::string& s, double* out = nullptr) {
  if (s.empty()) return false;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return false;
  if (out) *out = v;
  return true;
}
}  // namespace

std::string fmt(double v, int digits) {
  if (!std::isfinite(v)) return "-";
  std::ostringstream os;
  os.setf(std::ios::fixed);
  os.precision(digits);
  os << v;
  return os.str();
}

Table::Table(std::vector<std::string> columns) : cols_(std::move(columns)) {}

void Table::add_row(std::vector<std::string> cells) {
  NNOPT_CHECK(cells.size() == cols_.size(), ValueError, "table row has ", cells.size(),
              " cells but the table has ", cols_.size(), " columns");
  rows_.push_back(std::move(cells));
}

std::string Table::to_text() const {
  std::vector<size_t> w(cols_.size());
  for (size_t c = 0; c < cols_.size(); ++c) {
    w[c] = cols_[c].size();
    for (const auto& r : rows_) w[c] = std::max(w[c], r[c].size());
  }
  std::ostringstream os;
  auto line = [&](const std::vector<std::string>& cells, bool header) {
    for (size_t c = 0; c < cells.size(); ++c) {
      bool right = !header && is_number(cells[c]);
      std::string pad(w[c] - cells[c].size(), ' ');
      os << (c ? "  " : "") << (right ? pad + cells[c] : cells[c] + (c + 1 < cells.size() ? pad : ""));
    }
    os << "\n";
  };
  line(cols_, true);
  size_t total = 0;
  for (auto x : w) total += x;
  os << std::string(total + 2 * (w.size() - 1), '-') << "\n";
  for (const auto& r : rows_) line(r, false);
  return os.str();
}

std::string Table::to_csv() const {
  auto esc = [](const std::string& s) {
    if (s.find_first_of(",\"\n") == std::string::npos) return s;
    std::string o = "\"";
    for (char ch : s) o += ch == '"' ? std::string("\"\"") : std::string(1, ch);
    return o + "\"";
  };
  std::ostringstream os;
  for (size_t c = 0; c < cols_.size(); ++c) os << (c ? "," : "") << esc(cols_[c]);
  os << "\n";
  for (const auto& r : rows_) {
    for (size_t c = 0; c < r.size(); ++c) os << (c ? "," : "") << esc(r[c]);
    os << "\n";
  }
  return os.str();
}

std::string Table::to_json() const {
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& r : rows_) {
    nlohmann::json o = nlohmann::json::object();
    for (size_t c = 0; c < r.size(); ++c) {
      double v;
      o[cols_[c]] = is_number(r[c], &v) ? nlohmann::json(v) : nlohmann::json(r[c]);
    }
    arr.push_back(o);
  }
  return arr.dump();
}

}  // namespace nnopt
