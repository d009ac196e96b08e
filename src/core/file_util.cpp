#include "nnopt/core/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "nnopt/core/error.h"

namespace nnopt {
namespace fs = std::filesystem;

void make_dirs(const std::string& path) {
  if (path.empty()) return;
  std::error_code ec;
  fs::create_directories(path, ec);
  NNOPT_CHECK(!ec, FileError, path, ": cannot create folder: ", ec.message());
}

std::string path_join(const std::string& a, const std::string& b) {
  if (a.empty()) return b;
  if (a.back() == '/') return a + b;
  return a + "/" + b;
}

bool path_exists(const std::string& path) {
  std::error_code ec;
  return fs::exists(path, ec);
}

uint64_t file_size(const std::string& path) {
  struct stat st {};
  NNOPT_CHECK(::stat(path.c_str(), &st) == 0, FileError, path, ": ", std::strerror(errno));
  return static_cast<uint64_t>(st.st_size);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  NNOPT_CHECK(in.good(), FileError, path, ": cannot open: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  NNOPT_CHECK(!in.bad(), FileError, path, ": read failed");
  return ss.str();
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  fs::path p(path);
  fs::path dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  make_dirs(dir.string());
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  NNOPT_CHECK(fd >= 0, FileError, path, ": cannot create temp file ", tmp, ": ", std::strerror(errno));
  const char* data = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, data, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw FileError(str_cat(path, ": write failed: ", std::strerror(e)));
    }
    data += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw FileError(str_cat(path, ": fsync/close failed: ", std::strerror(e)));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw FileError(str_cat(path, ": rename from temp file failed: ", std::strerror(e)));
  }
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace nnopt
