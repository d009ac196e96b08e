#pragma once
// A small text table for results (comparison tables, the demo), also written as CSV and JSON.
#include <string>
#include <vector>

namespace nnopt {

class Table {
 public:
  explicit Table(std::vector<std::string> columns);
  /// Adds a row; throws ValueError if the cell count differs from the columns.
  void add_row(std::vector<std::string> cells);
  /// Aligned text: numbers right-aligned, text left-aligned.
  std::string to_text() const;
  std::string to_csv() const;
  /// [{"column": "cell", ...}, ...]; cells that parse fully as numbers become numbers.
  std::string to_json() const;
  const std::vector<std::vector<std::string>>& rows() const { return rows_; }

 private:
  std::vector<std::string> cols_;
  std::vector<std::vector<std::string>> rows_;
};

/// Formats a number with `digits` decimals.
std::string fmt(double v, int digits = 2);

}  // namespace nnopt
