#pragma once
// In-memory image classification datasets: Fashion-MNIST, MNIST (IDX files)
// and synthetic data for tests. Images are kept as normalized float32.
//
// Example:
//   nnopt::DatasetOptions opt;            // fashion-mnist from the default folder
//   nnopt::Dataset train = nnopt::load_dataset(opt, /*train=*/true);   // images [60000, 1, 28, 28]
//   auto [tr, val] = nnopt::split_validation(train, 5000, /*seed=*/0);
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nnopt {

/// A labelled image set held in memory. Copies share the tensors.
struct Dataset {
  torch::Tensor images;   ///< float32 [N, C, H, W], normalized
  torch::Tensor labels;   ///< int64 [N], each in [0, num_classes)
  int64_t num_classes = 10;  ///< number of classes (default 10)
  std::string name;       ///< "fashion-mnist", "mnist", "synthetic"

  /// Number of samples N (0 if `images` is undefined).
  int64_t size() const;
  /// Rows [begin, end) as views of this dataset. ValueError unless 0 <= begin <= end <= size().
  Dataset slice(int64_t begin, int64_t end) const;
  /// The rows at `indices` (int64 [K], each in [0, size())), copied. ValueError otherwise.
  Dataset subset(const torch::Tensor& indices) const;
  /// Per-sample shape, e.g. {1, 28, 28}.
  std::vector<int64_t> shape() const;
};

constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";

/// Normalization constants: mean and std of the train split's pixels scaled to [0, 1].
constexpr double kFashionMnistMean = 0.2860;
constexpr double kFashionMnistStd = 0.3530;
constexpr double kMnistMean = 0.1307;
constexpr double kMnistStd = 0.3081;

struct DatasetOptions {
  std::string name = "fashion-mnist";  ///< "fashion-mnist" | "mnist" | "synthetic"
  std::string dir;       ///< folder of the IDX files; empty: kDefaultFashionMnistDir for fashion-mnist, required for mnist
  int64_t limit = 0;     ///< >0: keep only the first `limit` samples of each split (fast tests); 0: all
  double mean = -1;      ///< normalization mean on the [0, 1] pixel scale; <0: the dataset's constant
  double std = -1;       ///< normalization std; <0: the dataset's constant; 0 is a ValueError
};

/// Names load_dataset knows: {"fashion-mnist", "mnist", "synthetic"}.
const std::vector<std::string>& dataset_names();

/// Loads the train or test split of a dataset.
///
/// fashion-mnist / mnist read `dir`/train-images-idx3-ubyte(.gz) and
/// train-labels-idx1-ubyte(.gz) (test: t10k-...), the unzipped name first, then
/// the .gz one. Images become float32 [N, 1, 28, 28] = (pixel / 255 - mean) / std.
/// Checks that image and label counts agree, labels are < 10, images are 28x28.
/// "synthetic" returns make_synthetic(limit or 6000 train / 1000 test, {1, 28, 28}, 10, seed 1 / 2),
/// then applies `mean`/`std` if given (its own constants are 0 and 1).
///
/// Throws ValueError for an unknown name (listing the known ones), a missing `dir`
/// for mnist, a negative limit or std == 0; FileError naming the path for a missing
/// folder or file and for bad contents (see read_idx).
Dataset load_dataset(const DatasetOptions& opt, bool train);

/// Deterministic split of `d` into (train, val) with `val_count` samples in val,
/// chosen by random_permutation(d.size(), seed). Both parts keep the original
/// order of their rows. ValueError unless 0 <= val_count <= d.size().
std::pair<Dataset, Dataset> split_validation(const Dataset& d, int64_t val_count, uint64_t seed);

/// Synthetic, learnable data for tests: images [n, shape...] = 0.6 * pattern[label] + 0.8 * noise,
/// with one fixed N(0, 1) pattern per class and N(0, 1) noise (so pixels have mean 0, std 1).
/// The class patterns depend only on (shape, num_classes); `seed` picks the samples and
/// labels, so two seeds give a train and a test set of the same task. Labels are balanced
/// (i % num_classes, shuffled). `shape` is the per-sample shape, e.g. {1, 28, 28}.
/// ValueError for n <= 0, an empty shape or a dim <= 0, num_classes < 2.
Dataset make_synthetic(int64_t n, const std::vector<int64_t>& shape, int64_t num_classes, uint64_t seed);

/// A permutation of 0..n-1 (int64 [n]) that depends only on `seed`: Fisher-Yates
/// driven by std::mt19937_64, never the global torch RNG; the same on every platform.
torch::Tensor random_permutation(int64_t n, uint64_t seed);

/// Combines two values into a well-mixed 64-bit seed (splitmix64 finalizer),
/// e.g. mix_seed(seed, epoch). Different inputs give unrelated outputs.
uint64_t mix_seed(uint64_t a, uint64_t b);

}  // namespace nnopt
