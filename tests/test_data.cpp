// Tests of the data layer: IDX reader, datasets, splits, synthetic data, DataLoader.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <ATen/CPUGeneratorImpl.h>

#include <chrono>
#include <functional>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/data/dataset.h"
#include "nnopt/data/idx.h"
#include "nnopt/data/loader.h"

using namespace nnopt;
using ::testing::AllOf;
using ::testing::HasSubstr;

namespace {

std::string test_dir() {
  static const std::string dir = [] {
    const char* env = std::getenv("NNOPT_TEST_TMP");
    std::string base = env && *env ? env : "/tmp";
    std::string d = path_join(base, "nnopt_data_test_" + std::to_string(::getpid()));
    make_dirs(d);
    return d;
  }();
  return dir;
}

/// Removes this process's scratch folder after the last test.
class ScratchCleanup : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(test_dir(), ec);
  }
};
[[maybe_unused]] ::testing::Environment* const kScratchCleanup =
    ::testing::AddGlobalTestEnvironment(new ScratchCleanup);

std::string tmp_path(const std::string& name) { return path_join(test_dir(), name); }

/// IDX header bytes written by hand (so tests do not depend on idx_bytes).
std::string header(uint8_t type, const std::vector<uint32_t>& dims, int ndims = -1) {
  std::string h = {'\0', '\0', static_cast<char>(type),
                   static_cast<char>(ndims < 0 ? int(dims.size()) : ndims)};
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((d >> s) & 0xff));
  }
  return h;
}

std::string pattern_bytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 7 + i / 13) & 0xff);
  return s;
}

/// Writes `bytes` as a gzip file with zlib; append = true adds a second gzip member.
void write_gzip(const std::string& path, const std::string& bytes, bool append = false) {
  gzFile f = gzopen(path.c_str(), append ? "ab" : "wb");
  ASSERT_NE(f, nullptr) << path;
  if (!bytes.empty()) {
    ASSERT_EQ(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())), int(bytes.size()));
  }
  ASSERT_EQ(gzclose(f), Z_OK);
}

std::string gzip_bytes(const std::string& bytes) {
  std::string p = tmp_path("gzip_scratch.gz");
  write_gzip(p, bytes);
  return read_file(p);
}

/// Runs read_idx(path) and returns the FileError's text ("" if it did not throw FileError).
std::string idx_error(const std::string& path) {
  try {
    read_idx(path);
  } catch (const FileError& e) {
    return e.what();
  }
  return "";
}

torch::Tensor u8_from(const std::string& bytes) {
  return torch::from_blob(const_cast<char*>(bytes.data()), {int64_t(bytes.size())}, torch::kUInt8).clone();
}

}  // namespace

// ---------------------------------------------------------------- IDX reader

TEST(Idx, RawRoundTrip) {
  std::string data = pattern_bytes(3 * 4 * 5);
  std::string p = tmp_path("ok.idx");
  write_file_atomic(p, header(0x08, {3, 4, 5}) + data);
  torch::Tensor t = read_idx(p);
  EXPECT_EQ(t.scalar_type(), torch::kUInt8);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3, 4, 5}));
  EXPECT_TRUE(t.flatten().equal(u8_from(data)));
}

TEST(Idx, IdxBytesMatchesHandWrittenFormat) {
  torch::Tensor t = torch::arange(24, torch::kUInt8).view({2, 3, 4});
  std::string expect = header(0x08, {2, 3, 4}) + std::string(reinterpret_cast<const char*>(t.data_ptr<uint8_t>()), 24);
  EXPECT_EQ(idx_bytes(t), expect);
  EXPECT_THROW(idx_bytes(torch::zeros({2}, torch::kFloat)), ValueError);
}

TEST(Idx, GzipRoundTripGrowsBufferAcrossChunks) {
  // 1.6 MB of compressible data: a small .gz, so the output buffer starts below the claim and grows.
  std::string data = pattern_bytes(1000 * 40 * 40);
  std::string p = tmp_path("ok.idx.gz");
  write_gzip(p, header(0x08, {1000, 40, 40}) + data);
  ASSERT_LT(file_size(p), data.size() / 4);
  torch::Tensor t = read_idx(p);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{1000, 40, 40}));
  EXPECT_TRUE(t.flatten().equal(u8_from(data)));
}

TEST(Idx, GzipMultiMember) {
  std::string all = header(0x08, {6, 10}) + pattern_bytes(60);
  std::string p = tmp_path("multi.idx.gz");
  write_gzip(p, all.substr(0, 20));
  write_gzip(p, all.substr(20), /*append=*/true);
  torch::Tensor t = read_idx(p);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{6, 10}));
  EXPECT_TRUE(t.flatten().equal(u8_from(pattern_bytes(60))));
}

TEST(Idx, MissingFile) {
  std::string p = tmp_path("does_not_exist.idx");
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("cannot open"), HasSubstr("No such file")));
}

TEST(Idx, WrongMagic) {
  std::string p = tmp_path("bad_magic.idx");
  write_file_atomic(p, std::string("\x12\x34\x08\x01", 4) + std::string(4, '\0'));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("wrong magic number 0x12 0x34 0x08 0x01")));
  // ndims must be 1..4.
  write_file_atomic(p, header(0x08, {}, 0));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("wrong magic number")));
  write_file_atomic(p, header(0x08, {1, 1, 1, 1, 1}) + "x");
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("wrong magic number")));
  // Shorter than a magic number.
  write_file_atomic(p, std::string("\0\0", 2));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("not an IDX file"), HasSubstr("holds only 2 bytes")));
}

TEST(Idx, UnsupportedType) {
  std::string p = tmp_path("float.idx");
  write_file_atomic(p, header(0x0D, {2}) + std::string(8, '\0'));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("unsupported IDX type code 0x0d (float32)"),
                                  HasSubstr("only 0x08")));
}

TEST(Idx, AbsurdDimsFailFast) {
  std::string p = tmp_path("absurd.idx");
  write_file_atomic(p, header(0x08, {60000, 60000, 60000, 60000}) + "abc");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("absurd IDX dims 60000x60000x60000x60000"),
                                  HasSubstr("more than 2^31 elements")));
  // Also when the header hides in a gzip stream.
  std::string pz = tmp_path("absurd.idx.gz");
  write_gzip(pz, header(0x08, {60000, 60000, 60000, 60000}));
  EXPECT_THAT(idx_error(pz), AllOf(HasSubstr(pz), HasSubstr("absurd IDX dims")));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.5);
  // A zero dim.
  write_file_atomic(p, header(0x08, {5, 0, 3}));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("absurd IDX dims 5x0x3: dim 1 is 0")));
}

TEST(Idx, TruncatedRaw) {
  std::string p = tmp_path("truncated.idx");
  write_file_atomic(p, header(0x08, {10, 28, 28}) + pattern_bytes(100));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("truncated"), HasSubstr("claims 7840 data bytes (10x28x28)"),
                                  HasSubstr("holds only 100")));
  // Cut inside the header.
  write_file_atomic(p, header(0x08, {10, 28, 28}).substr(0, 9));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("truncated IDX header"), HasSubstr("ends after 9 bytes")));
}

TEST(Idx, HeaderClaimsMoreItemsThanTheGzipHolds) {
  // A complete, valid gzip stream whose IDX content is 50 of the 100 images the header claims.
  std::string p = tmp_path("short_content.idx.gz");
  write_gzip(p, header(0x08, {100, 28, 28}) + pattern_bytes(50 * 784));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("truncated"), HasSubstr("claims 78400 data bytes"),
                                  HasSubstr("gzip stream holds only 39200")));
}

TEST(Idx, GzipClaimTooBigForTheFileFailsFast) {
  // 10^9 bytes claimed by a ~40-byte gzip file: impossible (deflate expands at most 1032x).
  std::string p = tmp_path("huge_claim.idx.gz");
  write_gzip(p, header(0x08, {1000, 1000, 1000}) + "abc");
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("truncated"), HasSubstr("claims 1000000000 data bytes"),
                                  HasSubstr("decompresses to at most")));
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 0.5);
}

TEST(Idx, TruncatedGzip) {
  std::string full = gzip_bytes(header(0x08, {50, 28, 28}) + pattern_bytes(50 * 784));
  std::string p = tmp_path("truncated.idx.gz");
  write_file_atomic(p, full.substr(0, full.size() / 2));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("truncated gzip stream")));
  // Only the 8-byte trailer (CRC, length) missing: all data is there, the stream is still cut.
  write_file_atomic(p, full.substr(0, full.size() - 8));
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("truncated gzip stream")));
}

TEST(Idx, TrailingBytesRaw) {
  std::string p = tmp_path("trailing.idx");
  write_file_atomic(p, header(0x08, {2, 3}) + pattern_bytes(6) + "xyzzy");
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("trailing garbage: 5 bytes after the 6 data bytes")));
}

TEST(Idx, TrailingBytesGzip) {
  std::string p = tmp_path("trailing.idx.gz");
  write_gzip(p, header(0x08, {2, 3}) + pattern_bytes(6) + "xyz");
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("trailing garbage: 3 bytes after the 6 data bytes")));
  // Junk after the end of a valid gzip stream.
  write_file_atomic(p, gzip_bytes(header(0x08, {2, 3}) + pattern_bytes(6)) + "junk");
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("trailing garbage after the end of the gzip stream")));
}

TEST(Idx, CorruptGzip) {
  const std::string good = gzip_bytes(header(0x08, {50, 28, 28}) + pattern_bytes(50 * 784));
  std::string p = tmp_path("corrupt.idx.gz");
  // gzopen writes a 10-byte header without a file name; byte 10 starts the deflate data.
  std::string bad = good;
  bad[10] = static_cast<char>(0xff);  // BTYPE = 11: reserved block type
  write_file_atomic(p, bad);
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("corrupt gzip stream"), HasSubstr("invalid block type")));
  // Wrong CRC-32 in the trailer.
  bad = good;
  bad[bad.size() - 8] ^= 0x55;
  write_file_atomic(p, bad);
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("corrupt gzip stream"), HasSubstr("incorrect data check")));
  // Unknown compression method in the gzip header.
  bad = good;
  bad[2] = 7;
  write_file_atomic(p, bad);
  EXPECT_THAT(idx_error(p), AllOf(HasSubstr(p), HasSubstr("corrupt gzip stream")));
}

// ---------------------------------------------------------------- datasets

namespace {

bool have_fashion_mnist() {
  return path_exists(path_join(kDefaultFashionMnistDir, "train-images-idx3-ubyte.gz")) ||
         path_exists(path_join(kDefaultFashionMnistDir, "train-images-idx3-ubyte"));
}

/// Writes a small MNIST-style folder with unzipped IDX files (n images of `side` x `side`).
std::string write_fake_mnist(const std::string& name, int64_t n, int64_t side = 28, int64_t label_n = -1,
                             int label_max = 9) {
  std::string dir = tmp_path(name);
  make_dirs(dir);
  torch::Tensor images = torch::arange(n * side * side, torch::kLong).remainder_(256).to(torch::kUInt8).view({n, side, side});
  torch::Tensor labels = torch::arange(label_n < 0 ? n : label_n, torch::kLong).remainder_(label_max + 1).to(torch::kUInt8);
  for (const char* split : {"train", "t10k"}) {
    write_file_atomic(path_join(dir, std::string(split) + "-images-idx3-ubyte"), idx_bytes(images));
    write_file_atomic(path_join(dir, std::string(split) + "-labels-idx1-ubyte"), idx_bytes(labels));
  }
  return dir;
}

std::string error_text(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

/// A dataset whose label is the sample's id: makes orders and splits visible.
Dataset id_dataset(int64_t n) {
  Dataset d;
  d.images = torch::arange(n, torch::kFloat).view({n, 1, 1, 1}).expand({n, 1, 2, 3}).contiguous();
  d.labels = torch::arange(n, torch::kLong);
  d.num_classes = n;
  d.name = "ids";
  return d;
}

}  // namespace

TEST(Dataset, FashionMnistLoadsWithDocumentedStatistics) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "no Fashion-MNIST in " << kDefaultFashionMnistDir;
  DatasetOptions opt;
  opt.mean = 0;  // raw pixels / 255, to measure the constants
  opt.std = 1;
  Dataset train = load_dataset(opt, true);
  EXPECT_EQ(train.name, "fashion-mnist");
  EXPECT_EQ(train.size(), 60000);
  EXPECT_EQ(train.shape(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_EQ(train.images.scalar_type(), torch::kFloat);
  EXPECT_EQ(train.labels.scalar_type(), torch::kLong);
  EXPECT_TRUE(torch::bincount(train.labels).equal(torch::full({10}, 6000, torch::kLong)));
  // The documented constants, to the 4 digits they are given with.
  EXPECT_NEAR(train.images.mean().item<double>(), kFashionMnistMean, 5e-5);
  EXPECT_NEAR(train.images.std().item<double>(), kFashionMnistStd, 5e-5);
  EXPECT_GE(train.images.min().item<float>(), 0.0f);
  EXPECT_LE(train.images.max().item<float>(), 1.0f);

  // Default normalization = (x - 0.2860) / 0.3530 on the same pixels.
  DatasetOptions small;
  small.limit = 500;
  Dataset test = load_dataset(small, false);
  EXPECT_EQ(test.size(), 500);
  Dataset test_raw = load_dataset([&] { DatasetOptions o = opt; o.limit = 500; return o; }(), false);
  EXPECT_TRUE(torch::allclose(test.images, (test_raw.images - kFashionMnistMean) / kFashionMnistStd, 1e-5, 1e-5));
  EXPECT_TRUE(test.labels.equal(test_raw.labels));
}

TEST(Dataset, FashionMnistTestSplit) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "no Fashion-MNIST in " << kDefaultFashionMnistDir;
  Dataset test = load_dataset(DatasetOptions(), false);
  EXPECT_EQ(test.size(), 10000);
  EXPECT_TRUE(torch::bincount(test.labels).equal(torch::full({10}, 1000, torch::kLong)));
  // Normalized: roughly mean 0, std 1 (the test split's own statistics differ slightly).
  EXPECT_NEAR(test.images.mean().item<double>(), 0.0, 0.02);
  EXPECT_NEAR(test.images.std().item<double>(), 1.0, 0.02);
}

TEST(Dataset, LoadsUnzippedFilesAndChecksContents) {
  std::string dir = write_fake_mnist("fake_mnist", 30);
  DatasetOptions opt;
  opt.name = "mnist";
  opt.dir = dir;
  opt.limit = 20;
  Dataset d = load_dataset(opt, true);
  EXPECT_EQ(d.name, "mnist");
  EXPECT_EQ(d.size(), 20);
  EXPECT_EQ(d.shape(), (std::vector<int64_t>{1, 28, 28}));
  // Pixel 0 of image 0 is 0, pixel 1 is 1: normalized with the MNIST constants.
  EXPECT_NEAR(d.images[0][0][0][0].item<float>(), (0.0 - kMnistMean) / kMnistStd, 1e-5);
  EXPECT_NEAR(d.images[0][0][0][1].item<float>(), (1.0 / 255 - kMnistMean) / kMnistStd, 1e-5);
  EXPECT_EQ(d.labels[13].item<int64_t>(), 3);

  // Counts disagree.
  opt.dir = write_fake_mnist("fake_mnist_count", 30, 28, 29);
  EXPECT_THAT(error_text([&] { load_dataset(opt, false); }),
              AllOf(HasSubstr("t10k-images-idx3-ubyte holds 30 images"), HasSubstr("holds 29 labels")));
  // Label out of range.
  opt.dir = write_fake_mnist("fake_mnist_label", 30, 28, -1, 11);
  EXPECT_THAT(error_text([&] { load_dataset(opt, true); }),
              AllOf(HasSubstr("train-labels-idx1-ubyte"), HasSubstr("label 10 at index 10 is not < 10")));
  // Wrong image size.
  opt.dir = write_fake_mnist("fake_mnist_side", 4, 32);
  EXPECT_THAT(error_text([&] { load_dataset(opt, true); }),
              AllOf(HasSubstr("train-images-idx3-ubyte"), HasSubstr("expected images [N, 28, 28], got [4, 32, 32]")));
}

TEST(Dataset, LoadErrors) {
  DatasetOptions opt;
  opt.name = "cifar10";
  EXPECT_THROW(load_dataset(opt, true), ValueError);
  EXPECT_THAT(error_text([&] { load_dataset(opt, true); }),
              AllOf(HasSubstr("unknown dataset 'cifar10'"), HasSubstr("fashion-mnist, mnist, synthetic")));
  opt.name = "mnist";
  EXPECT_THROW(load_dataset(opt, true), ValueError);
  EXPECT_THAT(error_text([&] { load_dataset(opt, true); }), HasSubstr("needs DatasetOptions::dir"));
  opt.dir = tmp_path("no_such_dir");
  EXPECT_THROW(load_dataset(opt, true), FileError);
  EXPECT_THAT(error_text([&] { load_dataset(opt, true); }), AllOf(HasSubstr(opt.dir), HasSubstr("does not exist")));
  opt.dir = tmp_path("empty_dir");
  make_dirs(opt.dir);
  EXPECT_THROW(load_dataset(opt, true), FileError);
  EXPECT_THAT(error_text([&] { load_dataset(opt, true); }),
              AllOf(HasSubstr(path_join(opt.dir, "train-images-idx3-ubyte.gz")), HasSubstr("not found")));
  opt = DatasetOptions();
  opt.name = "synthetic";
  opt.std = 0;
  EXPECT_THROW(load_dataset(opt, true), ValueError);
}

TEST(Dataset, SliceAndSubset) {
  Dataset d = id_dataset(10);
  Dataset s = d.slice(2, 5);
  EXPECT_EQ(s.size(), 3);
  EXPECT_TRUE(s.labels.equal(torch::tensor({2, 3, 4}, torch::kLong)));
  EXPECT_EQ(s.shape(), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(d.slice(4, 4).size(), 0);
  EXPECT_THAT(error_text([&] { d.slice(5, 11); }), HasSubstr("slice [5, 11) is out of range for 10 samples"));
  EXPECT_THROW(d.slice(-1, 3), ValueError);
  EXPECT_THROW(d.slice(4, 3), ValueError);

  Dataset u = d.subset(torch::tensor({7, 1, 7}, torch::kLong));
  EXPECT_TRUE(u.labels.equal(torch::tensor({7, 1, 7}, torch::kLong)));
  EXPECT_EQ(u.images[0][0][1][2].item<float>(), 7.0f);
  EXPECT_THAT(error_text([&] { d.subset(torch::tensor({1, 10}, torch::kLong)); }),
              HasSubstr("subset index 10 is out of range for 10 samples"));
  EXPECT_THROW(d.subset(torch::tensor({1, 2}, torch::kInt)), ValueError);
}

TEST(Dataset, SplitValidationIsDeterministicAndDisjoint) {
  Dataset d = id_dataset(100);
  auto [tr1, val1] = split_validation(d, 20, 7);
  auto [tr2, val2] = split_validation(d, 20, 7);
  auto [tr3, val3] = split_validation(d, 20, 8);
  EXPECT_EQ(tr1.size(), 80);
  EXPECT_EQ(val1.size(), 20);
  EXPECT_TRUE(val1.labels.equal(val2.labels));
  EXPECT_TRUE(tr1.labels.equal(tr2.labels));
  EXPECT_FALSE(val1.labels.equal(val3.labels));
  // Disjoint, together all ids, each part in the original order.
  torch::Tensor all = std::get<0>(torch::cat({tr1.labels, val1.labels}).sort());
  EXPECT_TRUE(all.equal(torch::arange(100, torch::kLong)));
  EXPECT_TRUE(std::get<0>(val1.labels.sort()).equal(val1.labels));
  EXPECT_TRUE(tr1.images.select(1, 0).select(1, 0).select(1, 0).equal(tr1.labels.to(torch::kFloat)));
  // Not simply the last 20.
  EXPECT_FALSE(val1.labels.equal(torch::arange(80, 100, torch::kLong)));
  EXPECT_THROW(split_validation(d, 101, 0), ValueError);
  EXPECT_EQ(split_validation(d, 0, 0).second.size(), 0);
}

TEST(Dataset, RandomPermutationIsFixedBySeed) {
  torch::Tensor a = random_permutation(1000, 3);
  EXPECT_TRUE(a.equal(random_permutation(1000, 3)));
  EXPECT_FALSE(a.equal(random_permutation(1000, 4)));
  EXPECT_TRUE(std::get<0>(a.sort()).equal(torch::arange(1000, torch::kLong)));
  // Does not touch or depend on the global torch RNG.
  torch::manual_seed(1);
  torch::Tensor r1 = torch::rand({3});
  torch::manual_seed(1);
  random_permutation(1000, 3);
  make_synthetic(10, {4}, 2, 0);
  EXPECT_TRUE(torch::rand({3}).equal(r1));
  EXPECT_NE(mix_seed(0, 1), mix_seed(1, 0));
}

TEST(Dataset, SyntheticIsDeterministicBalancedAndLearnable) {
  Dataset a = make_synthetic(600, {1, 8, 8}, 4, 1);
  Dataset b = make_synthetic(600, {1, 8, 8}, 4, 1);
  Dataset c = make_synthetic(400, {1, 8, 8}, 4, 2);
  EXPECT_EQ(a.name, "synthetic");
  EXPECT_EQ(a.num_classes, 4);
  EXPECT_EQ(a.images.sizes(), (std::vector<int64_t>{600, 1, 8, 8}));
  EXPECT_TRUE(a.images.equal(b.images));
  EXPECT_TRUE(a.labels.equal(b.labels));
  EXPECT_TRUE(torch::bincount(a.labels).equal(torch::full({4}, 150, torch::kLong)));
  EXPECT_NEAR(a.images.mean().item<double>(), 0.0, 0.1);
  EXPECT_NEAR(a.images.std().item<double>(), 1.0, 0.1);
  // Seed 2 is a test set of the same task: class means from seed 1 classify it.
  torch::Tensor x = a.images.flatten(1), xc = c.images.flatten(1);
  std::vector<torch::Tensor> means;
  for (int64_t k = 0; k < 4; ++k) means.push_back(x.index({a.labels == k}).mean(0));
  torch::Tensor pred = torch::cdist(xc, torch::stack(means)).argmin(1);
  double acc = pred.eq(c.labels).to(torch::kDouble).mean().item<double>();
  EXPECT_GT(acc, 0.9);
  EXPECT_THROW(make_synthetic(0, {4}, 2, 0), ValueError);
  EXPECT_THROW(make_synthetic(4, {4, 0}, 2, 0), ValueError);
  EXPECT_THROW(make_synthetic(4, {4}, 1, 0), ValueError);

  DatasetOptions opt;
  opt.name = "synthetic";
  opt.limit = 50;
  Dataset s = load_dataset(opt, true);
  EXPECT_EQ(s.size(), 50);
  EXPECT_EQ(s.shape(), (std::vector<int64_t>{1, 28, 28}));
  EXPECT_FALSE(s.images.equal(load_dataset(opt, false).images));
}

// ---------------------------------------------------------------- DataLoader

namespace {

std::vector<Batch> epoch_batches(DataLoader& loader, int64_t epoch) {
  loader.start_epoch(epoch);
  std::vector<Batch> out;
  Batch b;
  while (loader.next(b)) out.push_back(b);
  return out;
}

void expect_same_batches(const std::vector<Batch>& a, const std::vector<Batch>& b) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].index, b[i].index);
    EXPECT_TRUE(a[i].x.equal(b[i].x)) << "batch " << i;
    EXPECT_TRUE(a[i].y.equal(b[i].y)) << "batch " << i;
  }
}

LoaderOptions loader_opts(int64_t bs, bool shuffle = true, uint64_t seed = 0) {
  LoaderOptions o;
  o.batch_size = bs;
  o.shuffle = shuffle;
  o.seed = seed;
  return o;
}

}  // namespace

TEST(Loader, CoversEverySampleOnceWithPartialLastBatch) {
  Dataset d = id_dataset(10);
  DataLoader loader(d, loader_opts(4));
  EXPECT_EQ(loader.num_batches(), 3);
  EXPECT_EQ(loader.size(), 10);
  EXPECT_EQ(loader.dataset().size(), 10);
  auto batches = epoch_batches(loader, 0);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_EQ(batches[0].x.sizes(), (std::vector<int64_t>{4, 1, 2, 3}));
  EXPECT_EQ(batches[2].x.sizes(), (std::vector<int64_t>{2, 1, 2, 3}));
  EXPECT_EQ(batches[2].y.sizes(), (std::vector<int64_t>{2}));
  EXPECT_EQ(batches[2].index, 2);
  std::vector<torch::Tensor> ys;
  for (const auto& b : batches) {
    EXPECT_EQ(b.y.scalar_type(), torch::kLong);
    // x rows are the images of the y ids.
    EXPECT_TRUE(b.x.equal(d.images.index_select(0, b.y)));
    ys.push_back(b.y);
  }
  torch::Tensor all = torch::cat(ys);
  EXPECT_TRUE(std::get<0>(all.sort()).equal(torch::arange(10, torch::kLong)));
  EXPECT_FALSE(all.equal(torch::arange(10, torch::kLong)));  // shuffled

  Batch b;
  EXPECT_FALSE(loader.next(b));  // stays exhausted
  EXPECT_FALSE(loader.next(b));

  LoaderOptions o = loader_opts(4);
  o.drop_last = true;
  DataLoader dropping(d, o);
  EXPECT_EQ(dropping.num_batches(), 2);
  auto kept = epoch_batches(dropping, 0);
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[1].y.size(0), 4);
}

TEST(Loader, NoShuffleKeepsDatasetOrder) {
  Dataset d = id_dataset(7);
  DataLoader loader(d, loader_opts(3, /*shuffle=*/false));
  auto batches = epoch_batches(loader, 5);
  ASSERT_EQ(batches.size(), 3u);
  EXPECT_TRUE(torch::cat({batches[0].y, batches[1].y, batches[2].y}).equal(torch::arange(7, torch::kLong)));
}

TEST(Loader, OrderDependsOnlyOnSeedAndEpoch) {
  Dataset d = make_synthetic(200, {1, 6, 6}, 3, 0);
  LoaderOptions o = loader_opts(32, true, 11);
  o.augment.crop_padding = 2;
  o.augment.hflip = true;
  DataLoader a(d, o);
  // An uninterrupted run through epochs 0..3 ...
  std::vector<Batch> run_e3;
  for (int64_t e = 0; e <= 3; ++e) run_e3 = epoch_batches(a, e);
  // ... and a fresh loader resumed at epoch 3 see the same batches.
  DataLoader b(d, o);
  expect_same_batches(run_e3, epoch_batches(b, 3));
  // Another epoch gives another order; another seed too.
  auto e4 = epoch_batches(b, 4);
  EXPECT_FALSE(e4[0].y.equal(run_e3[0].y));
  o.seed = 12;
  DataLoader c(d, o);
  EXPECT_FALSE(epoch_batches(c, 3)[0].y.equal(run_e3[0].y));
  // next() without start_epoch() is epoch 0.
  DataLoader fresh(d, loader_opts(32, true, 11));
  DataLoader explicit0(d, loader_opts(32, true, 11));
  Batch first;
  ASSERT_TRUE(fresh.next(first));
  EXPECT_TRUE(first.y.equal(epoch_batches(explicit0, 0)[0].y));
}

TEST(Loader, PrefetchGivesIdenticalBatches) {
  Dataset d = make_synthetic(300, {1, 8, 8}, 5, 3);
  LoaderOptions o = loader_opts(64, true, 5);
  o.augment.crop_padding = 3;
  o.augment.hflip = true;
  o.prefetch = true;
  DataLoader on(d, o);
  o.prefetch = false;
  DataLoader off(d, o);
  for (int64_t e : {0, 1, 7}) expect_same_batches(epoch_batches(on, e), epoch_batches(off, e));
}

TEST(Loader, RestartAndDestroyMidEpoch) {
  Dataset d = make_synthetic(500, {1, 4, 4}, 2, 0);
  LoaderOptions o = loader_opts(10, true, 1);
  auto reference = [&] {
    DataLoader r(d, o);
    return epoch_batches(r, 2);
  }();
  {
    DataLoader loader(d, o);
    loader.start_epoch(2);
    Batch b;
    ASSERT_TRUE(loader.next(b));
    ASSERT_TRUE(loader.next(b));
    EXPECT_EQ(b.index, 1);
    // Restart mid-epoch: the worker is joined and the epoch begins again at batch 0.
    expect_same_batches(epoch_batches(loader, 2), reference);
    loader.start_epoch(3);
    ASSERT_TRUE(loader.next(b));
  }  // destroyed with the prefetch thread mid-epoch: must join without hanging
  SUCCEED();
}

TEST(Loader, AugmentationOffEqualsInput) {
  Dataset d = make_synthetic(50, {2, 5, 7}, 3, 9);
  LoaderOptions o = loader_opts(16, true, 4);
  // Use ids as labels so each batch says which rows it holds.
  Dataset ids = id_dataset(50);
  ids.images = d.images;
  DataLoader id_loader(ids, o);
  for (const auto& b : epoch_batches(id_loader, 1)) {
    EXPECT_TRUE(b.x.equal(d.images.index_select(0, b.y)));
  }
  torch::Tensor x = d.images.narrow(0, 0, 4);
  EXPECT_TRUE(augment_batch(x, AugmentOptions(), 1).is_same(x));
}

TEST(Loader, CropMatchesPaddedReference) {
  // Differential test: the pointer-based crop against pad + narrow with torch ops.
  const int64_t p = 2, H = 5, W = 6;
  torch::Tensor x = torch::arange(40 * 2 * H * W, torch::kFloat).view({40, 2, H, W}).add_(1);
  AugmentOptions opt;
  opt.crop_padding = p;
  torch::Tensor y = augment_batch(x, opt, 123);
  ASSERT_EQ(y.sizes(), x.sizes());
  EXPECT_TRUE(augment_batch(x, opt, 123).equal(y));  // fixed by the seed
  torch::Tensor padded = torch::constant_pad_nd(x, {p, p, p, p}, 0);
  std::set<std::pair<int64_t, int64_t>> offsets;
  for (int64_t b = 0; b < x.size(0); ++b) {
    bool found = false;
    for (int64_t dy = 0; dy <= 2 * p && !found; ++dy) {
      for (int64_t dx = 0; dx <= 2 * p && !found; ++dx) {
        if (padded[b].narrow(1, dy, H).narrow(2, dx, W).equal(y[b])) {
          found = true;
          offsets.insert({dy, dx});
        }
      }
    }
    EXPECT_TRUE(found) << "sample " << b << " is not a crop of the padded input";
  }
  EXPECT_GE(offsets.size(), 10u);  // offsets vary across samples (25 possible)
  EXPECT_FALSE(augment_batch(x, opt, 124).equal(y));
}

TEST(Loader, FlipFlipsAboutHalf) {
  torch::Tensor x = torch::randn({1000, 1, 3, 4}, at::make_generator<at::CPUGeneratorImpl>(0));
  AugmentOptions opt;
  opt.hflip = true;
  torch::Tensor y = augment_batch(x, opt, 5);
  ASSERT_EQ(y.sizes(), x.sizes());
  torch::Tensor same = (y == x).flatten(1).all(1);
  torch::Tensor flipped = (y == x.flip({3})).flatten(1).all(1);
  EXPECT_TRUE((same | flipped).all().item<bool>());
  int64_t n_flipped = flipped.sum().item<int64_t>();
  EXPECT_GT(n_flipped, 430);
  EXPECT_LT(n_flipped, 570);
  EXPECT_FALSE(x.equal(y));
}

TEST(Loader, ConstructorErrors) {
  Dataset d = id_dataset(5);
  EXPECT_THAT(error_text([&] { DataLoader l(d, loader_opts(0)); }), HasSubstr("batch_size must be > 0, got 0"));
  EXPECT_THROW(DataLoader(d, loader_opts(-3)), ValueError);
  Dataset empty = d.slice(0, 0);
  EXPECT_THAT(error_text([&] { DataLoader l(empty, loader_opts(4)); }), HasSubstr("dataset 'ids' is empty"));
  EXPECT_THROW(DataLoader(Dataset(), loader_opts(4)), ValueError);
  LoaderOptions o = loader_opts(4);
  o.augment.crop_padding = -1;
  EXPECT_THROW(DataLoader(d, o), ValueError);
}

TEST(Loader, BackgroundErrorIsRethrownFromNext) {
  for (bool prefetch : {true, false}) {
    Dataset d = id_dataset(20);
    LoaderOptions o = loader_opts(4);
    o.prefetch = prefetch;
    DataLoader loader(d, o);
    // The loader shares the tensors: shrinking the labels makes every batch's index_select fail.
    d.labels.resize_({1});
    loader.start_epoch(0);
    Batch b;
    EXPECT_THAT(error_text([&] { loader.next(b); }), HasSubstr("out of range")) << "prefetch " << prefetch;
    EXPECT_FALSE(loader.next(b));  // the epoch ended with the error
  }
}

TEST(Loader, FastEnoughForTraining) {
  // 60000 MNIST-sized samples with crop + flip: the loader must not be the bottleneck.
  Dataset d = make_synthetic(60000, {1, 28, 28}, 10, 0);
  LoaderOptions o = loader_opts(128, true, 0);
  o.augment.crop_padding = 2;
  o.augment.hflip = true;
  DataLoader loader(d, o);
  auto t0 = std::chrono::steady_clock::now();
  loader.start_epoch(0);
  Batch b;
  int64_t seen = 0;
  while (loader.next(b)) seen += b.y.size(0);
  double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(seen, 60000);
  EXPECT_LT(sec, 3.0) << "one augmented epoch took " << sec << " s";
  RecordProperty("epoch_seconds", std::to_string(sec));
}
