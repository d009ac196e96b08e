#pragma once
// Helpers shared by the test files.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "nnopt/core/file_util.h"
#include "test_paths.h"

namespace nnopt::test {

/// A fresh folder for one test under NNOPT_TEST_TMP (or /tmp). The process id
/// is part of the name: ctest -j runs test processes side by side.
inline std::string temp_dir(const std::string& name) {
  const char* base = std::getenv("NNOPT_TEST_TMP");
  std::string dir = std::string(base ? base : "/tmp/nnopt_test") + "/" + name + "." +
                    std::to_string(::getpid());
  std::string cmd = "rm -rf '" + dir + "'";
  (void)std::system(cmd.c_str());
  make_dirs(dir);
  return dir;
}

struct CmdResult {
  int code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

/// Runs a shell command, capturing stdout and stderr.
inline CmdResult run_cmd(const std::string& cmd, const std::string& tmp) {
  std::string o = tmp + "/.stdout", e = tmp + "/.stderr";
  int rc = std::system((cmd + " >'" + o + "' 2>'" + e + "' </dev/null").c_str());
  CmdResult r;
  r.code = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  r.out = read_file(o);
  r.err = read_file(e);
  return r;
}

/// Runs the nnopt CLI with `args`.
inline CmdResult run_cli(const std::string& args, const std::string& tmp) {
  return run_cmd(std::string(NNOPT_CLI) + " " + args, tmp);
}

#define EXPECT_THROW_MSG(stmt, ErrType, text)                                          \
  do {                                                                                 \
    try {                                                                              \
      stmt;                                                                            \
      ADD_FAILURE() << "expected " #ErrType " containing '" << (text) << "'";         \
    } catch (const ErrType& e) {                                                       \
      EXPECT_NE(std::string(e.what()).find(text), std::string::npos)                   \
          << "message was: " << e.what();                                              \
    }                                                                                  \
  } while (0)

}  // namespace nnopt::test
