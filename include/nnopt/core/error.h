#pragma once
// Errors thrown by nnopt. Library code never exits; the CLI maps these to exit codes.
#include <sstream>
#include <stdexcept>
#include <string>

namespace nnopt {

/// Base class of every error nnopt throws on purpose. The message is one line
/// that names the input and what is wrong with it.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A user-supplied value (option, config key, flag) is out of range or unknown.
class ValueError : public Error {
 public:
  using Error::Error;
};

/// A file is missing, unreadable, truncated or of the wrong format.
class FileError : public Error {
 public:
  using Error::Error;
};

/// A graph is malformed: unknown input, cycle, shape mismatch, unsupported op.
class GraphError : public Error {
 public:
  using Error::Error;
};

namespace detail {
inline void str_into(std::ostringstream&) {}
template <typename T, typename... R>
void str_into(std::ostringstream& os, const T& v, const R&... rest) {
  os << v;
  str_into(os, rest...);
}
}  // namespace detail

/// Concatenates its arguments with operator<<.
template <typename... A>
std::string str_cat(const A&... a) {
  std::ostringstream os;
  detail::str_into(os, a...);
  return os.str();
}

}  // namespace nnopt

/// Throws ErrType(message) when cond is false: NNOPT_CHECK(n > 0, ValueError, "epochs must be > 0, got ", n)
#define NNOPT_CHECK(cond, ErrType, ...)                 \
  do {                                                  \
    if (!(cond)) throw ::nnopt::ErrType(::nnopt::str_cat(__VA_ARGS__)); \
  } while (0)
