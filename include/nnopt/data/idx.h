#pragma once
// IDX files (the MNIST / Fashion-MNIST format), raw or gzip-compressed.
//
// Layout (big endian):
//   u8 0, u8 0        magic
//   u8 type           0x08 = unsigned byte (the only type nnopt reads)
//   u8 ndims          1..4
//   u32 dims[ndims]   each > 0
//   data              prod(dims) elements, row-major
// A file that starts with the gzip magic 1f 8b is decompressed on the fly.
#include <torch/torch.h>

#include <string>

namespace nnopt {

/// Reads an IDX file (raw or gzip). Returns a uint8 tensor shaped by the IDX dims.
///
/// Only the unsigned-byte type (0x08) is supported. Throws FileError naming the
/// file and the problem: missing file, wrong magic number, unsupported type code,
/// absurd dims (a dim of 0 or more than 2^31 elements), truncated data, trailing
/// bytes, corrupt or truncated gzip stream. Sizes are checked before the data
/// buffer is allocated; a gzip stream is decompressed in chunks into a buffer that
/// grows with the data actually decompressed, never beyond what the header claims.
///
/// Example:
///   torch::Tensor x = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
///   // x: uint8 [10000, 28, 28]
torch::Tensor read_idx(const std::string& path);

/// Serializes a uint8 tensor (1..4 dims, each > 0) as a raw IDX file's bytes;
/// write_file_atomic(path, idx_bytes(t)) saves it. Throws ValueError otherwise.
std::string idx_bytes(const torch::Tensor& t);

}  // namespace nnopt
