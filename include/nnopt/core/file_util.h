#pragma once
// Files: atomic writes (temp file, fsync, rename) and checked reads.
#include <cstdint>
#include <string>

namespace nnopt {

/// Writes `bytes` to `path` so that a reader sees either the old file or the
/// complete new one: write to `path.tmp.<pid>`, fsync, rename, fsync the folder.
/// Creates missing parent folders. Throws FileError naming the path.
void write_file_atomic(const std::string& path, const std::string& bytes);

/// Reads a whole file. Throws FileError if it is missing or unreadable.
std::string read_file(const std::string& path);

/// Size of a file in bytes; throws FileError if it does not exist.
uint64_t file_size(const std::string& path);

/// True if `path` exists (file or folder).
bool path_exists(const std::string& path);

/// Creates a folder and its parents; throws FileError on failure.
void make_dirs(const std::string& path);

/// Joins two path parts with one '/'.
std::string path_join(const std::string& a, const std::string& b);

}  // namespace nnopt
