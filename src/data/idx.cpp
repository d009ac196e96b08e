#include "nnopt/data/idx.h"

#include <sys/stat.h>
#include <zlib.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "nnopt/core/error.h"

namespace nnopt {
namespace {

constexpr uint64_t kMaxElements = uint64_t(1) << 31;
constexpr size_t kChunk = size_t(1) << 16;
constexpr uint8_t kTypeUByte = 0x08;
// Deflate cannot expand data by more than 1032:1, so a gzip file of S bytes
// decompresses to at most S * kMaxDeflateRatio bytes.
constexpr uint64_t kMaxDeflateRatio = 1032;

std::string hex2(uint32_t v) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "0x%02x", v);
  return buf;
}

const char* type_name(uint8_t code) {
  switch (code) {
    case 0x08: return "unsigned byte";
    case 0x09: return "signed byte";
    case 0x0B: return "int16";
    case 0x0C: return "int32";
    case 0x0D: return "float32";
    case 0x0E: return "float64";
    default: return "unknown";
  }
}

std::string dims_str(const std::vector<int64_t>& dims) {
  std::string s;
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += "x";
    s += std::to_string(dims[i]);
  }
  return s;
}

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using FilePtr = std::unique_ptr<std::FILE, FileCloser>;

/// A stream of IDX bytes. read() fills up to n bytes and returns how many it
/// wrote; fewer than n only when the data has ended cleanly. Problems throw FileError.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  virtual size_t read(uint8_t* dst, size_t n) = 0;
};

class RawSource : public ByteSource {
 public:
  RawSource(std::FILE* f, const std::string& path) : f_(f), path_(path) {}
  size_t read(uint8_t* dst, size_t n) override {
    size_t got = std::fread(dst, 1, n, f_);
    NNOPT_CHECK(!std::ferror(f_), FileError, path_, ": read failed: ", std::strerror(errno));
    return got;
  }

 private:
  std::FILE* f_;
  const std::string& path_;
};

/// Streaming gzip decoder (one or more concatenated members).
class GzipSource : public ByteSource {
 public:
  GzipSource(std::FILE* f, const std::string& path) : f_(f), path_(path), in_(kChunk) {
    std::memset(&zs_, 0, sizeof(zs_));
    // 16 + MAX_WBITS: expect a gzip header and trailer (CRC-32 and length are checked).
    int rc = inflateInit2(&zs_, 16 + MAX_WBITS);
    NNOPT_CHECK(rc == Z_OK, FileError, path_, ": cannot initialize zlib (code ", rc, ")");
  }
  ~GzipSource() override { inflateEnd(&zs_); }
  GzipSource(const GzipSource&) = delete;
  GzipSource& operator=(const GzipSource&) = delete;

  size_t read(uint8_t* dst, size_t n) override {
    zs_.next_out = dst;
    zs_.avail_out = static_cast<uInt>(n);
    while (zs_.avail_out > 0) {
      if (zs_.avail_in == 0 && !file_eof_) refill();
      if (member_done_) {
        if (zs_.avail_in == 0) break;  // clean end of the last member
        // Another member must follow; anything else is junk after the stream.
        NNOPT_CHECK(zs_.next_in[0] == 0x1f, FileError, path_,
                    ": trailing garbage after the end of the gzip stream");
        inflateReset(&zs_);
        member_done_ = false;
      }
      uInt out_before = zs_.avail_out;
      uInt in_before = zs_.avail_in;
      int rc = inflate(&zs_, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        member_done_ = true;
        continue;
      }
      if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_STREAM_ERROR) {
        throw FileError(str_cat(path_, ": corrupt gzip stream: ", zs_.msg ? zs_.msg : "bad data"));
      }
      NNOPT_CHECK(rc != Z_MEM_ERROR, FileError, path_, ": out of memory while decompressing");
      bool progress = zs_.avail_out != out_before || zs_.avail_in != in_before;
      if (!progress && zs_.avail_in == 0 && file_eof_) {
        throw FileError(str_cat(path_,
                                ": truncated gzip stream: the compressed data ends before the "
                                "end-of-stream marker"));
      }
    }
    return n - zs_.avail_out;
  }

 private:
  void refill() {
    size_t got = std::fread(in_.data(), 1, in_.size(), f_);
    NNOPT_CHECK(!std::ferror(f_), FileError, path_, ": read failed: ", std::strerror(errno));
    if (got < in_.size()) file_eof_ = true;
    zs_.next_in = in_.data();
    zs_.avail_in = static_cast<uInt>(got);
  }

  std::FILE* f_;
  const std::string& path_;
  std::vector<Bytef> in_;
  z_stream zs_;
  bool file_eof_ = false;
  bool member_done_ = false;
};

/// Reads exactly n bytes or returns how many there were.
size_t read_full(ByteSource& src, uint8_t* dst, size_t n) {
  size_t done = 0;
  while (done < n) {
    size_t got = src.read(dst + done, n - done);
    if (got == 0) break;
    done += got;
  }
  return done;
}

}  // namespace

torch::Tensor read_idx(const std::string& path) {
  FilePtr file(std::fopen(path.c_str(), "rb"));
  NNOPT_CHECK(file, FileError, path, ": cannot open IDX file: ", std::strerror(errno));
  struct stat st {};
  NNOPT_CHECK(::fstat(::fileno(file.get()), &st) == 0, FileError, path, ": cannot stat: ",
              std::strerror(errno));
  NNOPT_CHECK(S_ISREG(st.st_mode), FileError, path, ": not a regular file");
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);

  uint8_t peek[2] = {0, 0};
  size_t peeked = std::fread(peek, 1, 2, file.get());
  const bool gzip = peeked == 2 && peek[0] == 0x1f && peek[1] == 0x8b;
  std::rewind(file.get());

  std::unique_ptr<ByteSource> src;
  if (gzip) {
    src = std::make_unique<GzipSource>(file.get(), path);
  } else {
    src = std::make_unique<RawSource>(file.get(), path);
  }
  const char* what = gzip ? "the gzip stream" : "the file";

  // Magic: 00 00 <type> <ndims>.
  uint8_t magic[4];
  size_t got = read_full(*src, magic, 4);
  NNOPT_CHECK(got == 4, FileError, path, ": not an IDX file: ", what, " holds only ", got,
              " bytes, fewer than the 4-byte magic number");
  NNOPT_CHECK(magic[0] == 0 && magic[1] == 0 && magic[3] >= 1 && magic[3] <= 4, FileError, path,
              ": not an IDX file: wrong magic number ", hex2(magic[0]), " ", hex2(magic[1]), " ",
              hex2(magic[2]), " ", hex2(magic[3]),
              " (expected 0x00 0x00 <type> <ndims 1..4>)");
  NNOPT_CHECK(magic[2] == kTypeUByte, FileError, path, ": unsupported IDX type code ",
              hex2(magic[2]), " (", type_name(magic[2]), "); only ", hex2(kTypeUByte),
              " (unsigned byte) is supported");
  const int ndims = magic[3];

  uint8_t raw_dims[16];
  got = read_full(*src, raw_dims, 4 * ndims);
  NNOPT_CHECK(got == size_t(4 * ndims), FileError, path, ": truncated IDX header: ", what,
              " ends after ", 4 + got, " bytes, the header of a ", ndims, "-dim file needs ",
              4 + 4 * ndims);
  std::vector<int64_t> dims(ndims);
  uint64_t count = 1;
  for (int i = 0; i < ndims; ++i) {
    const uint8_t* p = raw_dims + 4 * i;
    uint32_t d = (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3];
    dims[i] = d;
    if (count <= kMaxElements) count *= d;  // stops growing once absurd; d < 2^32 so no overflow
  }
  for (int i = 0; i < ndims; ++i) {
    NNOPT_CHECK(dims[i] > 0, FileError, path, ": absurd IDX dims ", dims_str(dims), ": dim ", i,
                " is 0");
  }
  NNOPT_CHECK(count <= kMaxElements, FileError, path, ": absurd IDX dims ", dims_str(dims),
              ": more than 2^31 elements");
  const uint64_t header_bytes = 4 + 4 * uint64_t(ndims);

  if (!gzip) {
    // The file size tells us everything before we allocate.
    const uint64_t data_bytes = file_bytes - std::min(file_bytes, header_bytes);
    NNOPT_CHECK(data_bytes >= count, FileError, path, ": truncated: the header claims ", count,
                " data bytes (", dims_str(dims), ") but the file holds only ", data_bytes);
    NNOPT_CHECK(data_bytes <= count, FileError, path, ": trailing garbage: ", data_bytes - count,
                " bytes after the ", count, " data bytes the header claims (", dims_str(dims), ")");
    torch::Tensor out = torch::empty(dims, torch::kUInt8);
    got = read_full(*src, out.data_ptr<uint8_t>(), count);
    NNOPT_CHECK(got == count, FileError, path, ": truncated: the header claims ", count,
                " data bytes but only ", got, " could be read (file changed while reading?)");
    return out;
  }

  // gzip: the decompressed size is unknown until the stream ends. Reject claims
  // that this file cannot possibly hold, then grow the buffer with the data.
  const uint64_t max_out = file_bytes * kMaxDeflateRatio;
  NNOPT_CHECK(count + header_bytes <= max_out, FileError, path, ": truncated: the header claims ",
              count, " data bytes (", dims_str(dims), ") but a ", file_bytes,
              "-byte gzip file decompresses to at most ", max_out);
  int64_t cap = static_cast<int64_t>(
      std::min<uint64_t>(count, std::max<uint64_t>(uint64_t(1) << 20, 4 * file_bytes)));
  torch::Tensor buf = torch::empty({cap}, torch::kUInt8);
  int64_t filled = 0;
  while (true) {
    size_t n = read_full(*src, buf.data_ptr<uint8_t>() + filled, size_t(cap - filled));
    filled += static_cast<int64_t>(n);
    if (filled < cap || uint64_t(cap) == count) break;
    int64_t new_cap = static_cast<int64_t>(std::min<uint64_t>(count, uint64_t(cap) * 2));
    torch::Tensor bigger = torch::empty({new_cap}, torch::kUInt8);
    bigger.narrow(0, 0, filled).copy_(buf.narrow(0, 0, filled));
    buf = std::move(bigger);
    cap = new_cap;
  }
  NNOPT_CHECK(uint64_t(filled) == count, FileError, path, ": truncated: the header claims ", count,
              " data bytes (", dims_str(dims), ") but the gzip stream holds only ", filled);
  // Drain to the end of the stream: checks the CRC and catches extra data.
  uint8_t scratch[4096];
  uint64_t extra = 0;
  while (size_t n = src->read(scratch, sizeof(scratch))) extra += n;
  NNOPT_CHECK(extra == 0, FileError, path, ": trailing garbage: ", extra, " bytes after the ", count,
              " data bytes the header claims (", dims_str(dims), ")");
  return buf.view(dims);
}

std::string idx_bytes(const torch::Tensor& t) {
  NNOPT_CHECK(t.defined() && t.scalar_type() == torch::kUInt8, ValueError,
              "idx_bytes: expected a uint8 tensor, got ",
              t.defined() ? c10::toString(t.scalar_type()) : "undefined");
  NNOPT_CHECK(t.dim() >= 1 && t.dim() <= 4, ValueError, "idx_bytes: expected 1..4 dims, got ",
              t.dim());
  std::string out;
  out.reserve(4 + 4 * t.dim() + t.numel());
  out.push_back('\0');
  out.push_back('\0');
  out.push_back(static_cast<char>(kTypeUByte));
  out.push_back(static_cast<char>(t.dim()));
  for (int64_t d : t.sizes()) {
    NNOPT_CHECK(d > 0 && d <= int64_t(UINT32_MAX), ValueError, "idx_bytes: bad dim ", d);
    for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  torch::Tensor c = t.contiguous();
  out.append(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()), size_t(c.numel()));
  return out;
}

}  // namespace nnopt
