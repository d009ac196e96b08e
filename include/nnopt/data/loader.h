#pragma once
// Batches over an in-memory Dataset: deterministic shuffling and augmentation,
// optional background prefetch.
//
// Example:
//   nnopt::LoaderOptions lo;
//   lo.batch_size = 128;
//   lo.augment.crop_padding = 2;
//   nnopt::DataLoader loader(train, lo);
//   for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//     loader.start_epoch(epoch);
//     nnopt::Batch b;
//     while (loader.next(b)) step(b.x, b.y);   // x: [B, 1, 28, 28], y: [B]
//   }
#include <torch/torch.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>

#include "nnopt/data/dataset.h"

namespace nnopt {

struct AugmentOptions {
  int64_t crop_padding = 0;  ///< random crop to the original size after zero-padding by this many pixels (0 = off)
  bool hflip = false;        ///< random horizontal flip with probability 0.5 (default off)
};

/// Random crop and flip of a batch x [B, C, H, W] -> [B, C, H, W]; the random
/// choices come from `seed` alone. Padding fills with 0 (the normalized mean, not black).
/// Returns `x` itself when nothing is enabled.
torch::Tensor augment_batch(const torch::Tensor& x, const AugmentOptions& opt, uint64_t seed);

struct Batch {
  torch::Tensor x;    ///< float32 [B, C, H, W]
  torch::Tensor y;    ///< int64 [B]
  int64_t index = 0;  ///< batch number within the epoch
  torch::Tensor samples;  ///< int64 [B]: each sample's position in the dataset
  bool augmented = false; ///< x was changed by augmentation (crop / flip)
};

struct LoaderOptions {
  int64_t batch_size = 128;  ///< samples per batch (> 0); the last batch may be smaller
  bool shuffle = true;       ///< new order every epoch, from (seed, epoch); false: dataset order
  bool drop_last = false;    ///< skip the last batch if it is smaller than batch_size
  uint64_t seed = 0;         ///< seeds shuffling and augmentation
  AugmentOptions augment;    ///< default: no augmentation
  bool prefetch = true;      ///< prepare the next batches on a background thread
};

/// Iterates a Dataset in batches. The order and the augmentation of epoch e depend
/// only on (seed, e), never on what ran before, so a run resumed at epoch e sees
/// exactly the batches an uninterrupted run would. Prefetch does not change the batches.
///
/// Not thread-safe: one consumer thread calls start_epoch/next. The loader shares
/// the dataset's tensors; do not modify them while it runs.
class DataLoader {
 public:
  /// ValueError for batch_size <= 0, empty data, a negative crop_padding or
  /// images/labels that disagree in length.
  DataLoader(const Dataset& data, LoaderOptions opt);
  ~DataLoader();
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  /// (Re)starts iteration for epoch `epoch` (>= 0). next() without it starts epoch 0.
  void start_epoch(int64_t epoch);
  /// Fills `out` with the next batch; false when the epoch is exhausted.
  /// Rethrows an exception raised while preparing the batch (also from the prefetch thread).
  bool next(Batch& out);
  /// Batches per epoch: ceil(size / batch_size), or floor with drop_last.
  int64_t num_batches() const;
  /// Samples in the dataset.
  int64_t size() const;
  const Dataset& dataset() const;
  const LoaderOptions& options() const { return opt_; }

 private:
  Batch make_batch(int64_t index) const;
  void stop_worker();
  void worker_loop();

  Dataset data_;
  LoaderOptions opt_;
  int64_t epoch_ = 0;
  bool started_ = false;
  torch::Tensor order_;    // int64 [N], sample order of the current epoch
  int64_t next_index_ = 0;  // next batch next() hands out

  // Prefetch: the worker fills `queue_` (at most kDepth batches) in order.
  struct Slot {
    Batch batch;
    std::exception_ptr error;
  };
  static constexpr size_t kDepth = 2;
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Slot> queue_;
  bool stop_ = false;
};

}  // namespace nnopt
