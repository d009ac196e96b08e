#include "nnopt/data/dataset.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <random>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/data/idx.h"

namespace nnopt {
namespace {

constexpr int64_t kImageSide = 28;
constexpr int64_t kIdxClasses = 10;
constexpr int64_t kSyntheticTrain = 6000;
constexpr int64_t kSyntheticTest = 1000;
constexpr uint64_t kSyntheticTrainSeed = 1;
constexpr uint64_t kSyntheticTestSeed = 2;

std::string shape_str(torch::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(s[i]);
  }
  return out + "]";
}

std::string names_str() {
  std::string s;
  for (const auto& n : dataset_names()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

/// Uniform in [0, bound) without modulo bias.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;  // 2^64 mod bound
  while (true) {
    uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

/// `dir`/`base`, or `dir`/`base`.gz; FileError naming both if neither exists.
std::string find_split_file(const std::string& dir, const std::string& base) {
  std::string plain = path_join(dir, base);
  if (path_exists(plain)) return plain;
  std::string gz = plain + ".gz";
  if (path_exists(gz)) return gz;
  throw FileError(str_cat(gz, ": file not found (nor ", plain, ")"));
}

Dataset normalize_synthetic(Dataset d, const DatasetOptions& opt) {
  const double mean = opt.mean >= 0 ? opt.mean : 0.0;
  const double stdev = opt.std > 0 ? opt.std : 1.0;
  if (mean != 0.0 || stdev != 1.0) d.images = d.images.sub(mean).div_(stdev);
  return d;
}

}  // namespace

int64_t Dataset::size() const { return images.defined() ? images.size(0) : 0; }

Dataset Dataset::slice(int64_t begin, int64_t end) const {
  NNOPT_CHECK(0 <= begin && begin <= end && end <= size(), ValueError, "Dataset '", name,
              "': slice [", begin, ", ", end, ") is out of range for ", size(), " samples");
  Dataset out = *this;
  out.images = images.narrow(0, begin, end - begin);
  out.labels = labels.narrow(0, begin, end - begin);
  return out;
}

Dataset Dataset::subset(const torch::Tensor& indices) const {
  NNOPT_CHECK(indices.defined() && indices.scalar_type() == torch::kLong && indices.dim() == 1,
              ValueError, "Dataset '", name, "': subset indices must be int64 [K], got ",
              indices.defined() ? c10::toString(indices.scalar_type()) : "undefined", " ",
              indices.defined() ? shape_str(indices.sizes()) : "");
  if (indices.numel() > 0) {
    const int64_t lo = indices.min().item<int64_t>();
    const int64_t hi = indices.max().item<int64_t>();
    NNOPT_CHECK(lo >= 0 && hi < size(), ValueError, "Dataset '", name, "': subset index ",
                lo < 0 ? lo : hi, " is out of range for ", size(), " samples");
  }
  Dataset out = *this;
  out.images = images.index_select(0, indices);
  out.labels = labels.index_select(0, indices);
  return out;
}

std::vector<int64_t> Dataset::shape() const {
  if (!images.defined()) return {};
  auto s = images.sizes();
  return std::vector<int64_t>(s.begin() + 1, s.end());
}

const std::vector<std::string>& dataset_names() {
  static const std::vector<std::string> names = {"fashion-mnist", "mnist", "synthetic"};
  return names;
}

Dataset load_dataset(const DatasetOptions& opt, bool train) {
  const auto& names = dataset_names();
  NNOPT_CHECK(std::find(names.begin(), names.end(), opt.name) != names.end(), ValueError,
              "unknown dataset '", opt.name, "'; known datasets: ", names_str());
  NNOPT_CHECK(opt.limit >= 0, ValueError, "dataset limit must be >= 0, got ", opt.limit);
  NNOPT_CHECK(opt.std != 0, ValueError, "dataset normalization std must be > 0 (or < 0 for the default), got 0");

  if (opt.name == "synthetic") {
    int64_t n = opt.limit > 0 ? opt.limit : (train ? kSyntheticTrain : kSyntheticTest);
    Dataset d = make_synthetic(n, {1, kImageSide, kImageSide}, kIdxClasses,
                               train ? kSyntheticTrainSeed : kSyntheticTestSeed);
    return normalize_synthetic(std::move(d), opt);
  }

  const bool fashion = opt.name == "fashion-mnist";
  std::string dir = opt.dir;
  if (dir.empty()) {
    NNOPT_CHECK(fashion, ValueError, "dataset '", opt.name, "' needs DatasetOptions::dir (the folder of its IDX files)");
    dir = kDefaultFashionMnistDir;
  }
  NNOPT_CHECK(path_exists(dir), FileError, dir, ": dataset folder for '", opt.name, "' does not exist");

  const std::string prefix = train ? "train" : "t10k";
  const std::string image_path = find_split_file(dir, prefix + "-images-idx3-ubyte");
  const std::string label_path = find_split_file(dir, prefix + "-labels-idx1-ubyte");
  torch::Tensor images = read_idx(image_path);  // uint8 [N, 28, 28]
  torch::Tensor labels = read_idx(label_path);  // uint8 [N]
  NNOPT_CHECK(images.dim() == 3 && images.size(1) == kImageSide && images.size(2) == kImageSide,
              FileError, image_path, ": expected images [N, 28, 28], got ", shape_str(images.sizes()));
  NNOPT_CHECK(labels.dim() == 1, FileError, label_path, ": expected labels [N], got ",
              shape_str(labels.sizes()));
  NNOPT_CHECK(images.size(0) == labels.size(0), FileError, image_path, " holds ", images.size(0),
              " images but ", label_path, " holds ", labels.size(0), " labels");
  if (opt.limit > 0 && opt.limit < images.size(0)) {
    images = images.narrow(0, 0, opt.limit);
    labels = labels.narrow(0, 0, opt.limit);
  }
  const int64_t max_label = labels.max().item<int64_t>();
  if (max_label >= kIdxClasses) {
    int64_t at = labels.ge(kIdxClasses).nonzero()[0][0].item<int64_t>();
    throw FileError(str_cat(label_path, ": label ", int(labels[at].item<uint8_t>()), " at index ", at,
                            " is not < ", kIdxClasses));
  }

  const double mean = opt.mean >= 0 ? opt.mean : (fashion ? kFashionMnistMean : kMnistMean);
  const double stdev = opt.std > 0 ? opt.std : (fashion ? kFashionMnistStd : kMnistStd);
  Dataset d;
  d.name = opt.name;
  d.num_classes = kIdxClasses;
  // (pixel / 255 - mean) / std in one multiply-subtract pass: [N, 28, 28] u8 -> [N, 1, 28, 28] f32.
  d.images = images.to(torch::kFloat)
                 .mul_(1.0 / (255.0 * stdev))
                 .sub_(mean / stdev)
                 .unsqueeze_(1);
  d.labels = labels.to(torch::kLong);
  return d;
}

std::pair<Dataset, Dataset> split_validation(const Dataset& d, int64_t val_count, uint64_t seed) {
  const int64_t n = d.size();
  NNOPT_CHECK(0 <= val_count && val_count <= n, ValueError, "Dataset '", d.name,
              "': validation count ", val_count, " is out of range [0, ", n, "]");
  torch::Tensor perm = random_permutation(n, seed);
  torch::Tensor val_idx = std::get<0>(perm.narrow(0, 0, val_count).sort());
  torch::Tensor train_idx = std::get<0>(perm.narrow(0, val_count, n - val_count).sort());
  return {d.subset(train_idx), d.subset(val_idx)};
}

Dataset make_synthetic(int64_t n, const std::vector<int64_t>& shape, int64_t num_classes, uint64_t seed) {
  NNOPT_CHECK(n > 0, ValueError, "make_synthetic: n must be > 0, got ", n);
  NNOPT_CHECK(!shape.empty(), ValueError, "make_synthetic: the per-sample shape is empty");
  for (int64_t s : shape) {
    NNOPT_CHECK(s > 0, ValueError, "make_synthetic: shape ", shape_str(shape), " has a dim <= 0");
  }
  NNOPT_CHECK(num_classes >= 2, ValueError, "make_synthetic: num_classes must be >= 2, got ", num_classes);

  // Class patterns: a function of (shape, num_classes) only.
  std::vector<int64_t> pattern_shape = {num_classes};
  pattern_shape.insert(pattern_shape.end(), shape.begin(), shape.end());
  uint64_t pattern_seed = mix_seed(0x5eed5eed5eedULL, uint64_t(num_classes));
  for (int64_t s : shape) pattern_seed = mix_seed(pattern_seed, uint64_t(s));
  auto pattern_gen = at::make_generator<at::CPUGeneratorImpl>(pattern_seed);
  torch::Tensor patterns = torch::randn(pattern_shape, pattern_gen, torch::kFloat);

  // Balanced labels, shuffled; samples = 0.6 * pattern + 0.8 * noise (unit variance).
  torch::Tensor labels =
      torch::arange(n, torch::kLong).remainder_(num_classes).index_select(0, random_permutation(n, seed));
  std::vector<int64_t> image_shape = {n};
  image_shape.insert(image_shape.end(), shape.begin(), shape.end());
  auto noise_gen = at::make_generator<at::CPUGeneratorImpl>(mix_seed(seed, 0x401e));
  torch::Tensor images = torch::randn(image_shape, noise_gen, torch::kFloat).mul_(0.8);
  images.add_(patterns.index_select(0, labels), 0.6);

  Dataset d;
  d.images = images;
  d.labels = labels;
  d.num_classes = num_classes;
  d.name = "synthetic";
  return d;
}

torch::Tensor random_permutation(int64_t n, uint64_t seed) {
  NNOPT_CHECK(n >= 0, ValueError, "random_permutation: n must be >= 0, got ", n);
  torch::Tensor perm = torch::arange(n, torch::kLong);
  int64_t* p = perm.data_ptr<int64_t>();
  std::mt19937_64 rng(mix_seed(seed, 0x9e37));
  for (int64_t i = n - 1; i > 0; --i) {
    int64_t j = static_cast<int64_t>(uniform_below(rng, uint64_t(i) + 1));
    std::swap(p[i], p[j]);
  }
  return perm;
}

uint64_t mix_seed(uint64_t a, uint64_t b) {
  auto splitmix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  };
  return splitmix(splitmix(a) ^ (b + 0x632be59bd9b4e019ULL));
}

}  // namespace nnopt
