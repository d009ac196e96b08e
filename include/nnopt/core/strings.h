#pragma once
// Small string helpers shared across areas.
#include <string>
#include <vector>

namespace nnopt {

/// Splits at every `sep`; empty parts are kept ("a..b" -> {"a", "", "b"}).
std::vector<std::string> split(const std::string& s, char sep);
/// The non-empty parts of a list such as "a,b,,c" -> {"a", "b", "c"}.
std::vector<std::string> split_list(const std::string& s, char sep = ',');
/// {"a", "b"} -> "a, b" (lists of names in error messages).
std::string join(const std::vector<std::string>& parts, const std::string& sep = ", ");

}  // namespace nnopt
