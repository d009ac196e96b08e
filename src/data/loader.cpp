#include "nnopt/data/loader.h"

#include <cstring>
#include <random>
#include <vector>

#include "nnopt/core/error.h"

namespace nnopt {
namespace {

/// Uniform in [0, bound) without modulo bias.
int64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  while (true) {
    uint64_t r = rng();
    if (r >= threshold) return static_cast<int64_t>(r % bound);
  }
}

/// out[b] = x[b] shifted by (dy[b] - p, dx[b] - p), zero outside: the same as
/// cropping H x W at (dy, dx) from x zero-padded by p. x, out: contiguous float [B, C, H, W].
void crop_shifted(const float* x, float* out, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p,
                  const std::vector<int64_t>& dy, const std::vector<int64_t>& dx) {
  for (int64_t b = 0; b < B; ++b) {
    const int64_t oy = dy[b] - p, ox = dx[b] - p;  // source offset
    const int64_t j0 = std::max<int64_t>(0, -ox), j1 = std::min<int64_t>(W, W - ox);
    for (int64_t c = 0; c < C; ++c) {
      const float* src = x + (b * C + c) * H * W;
      float* dst = out + (b * C + c) * H * W;
      for (int64_t i = 0; i < H; ++i) {
        float* row = dst + i * W;
        const int64_t r = i + oy;
        if (r < 0 || r >= H || j1 <= j0) {
          std::memset(row, 0, sizeof(float) * W);
          continue;
        }
        std::memset(row, 0, sizeof(float) * j0);
        std::memcpy(row + j0, src + r * W + j0 + ox, sizeof(float) * (j1 - j0));
        std::memset(row + j1, 0, sizeof(float) * (W - j1));
      }
    }
  }
}

}  // namespace

torch::Tensor augment_batch(const torch::Tensor& x, const AugmentOptions& opt, uint64_t seed) {
  NNOPT_CHECK(opt.crop_padding >= 0, ValueError, "augment: crop_padding must be >= 0, got ",
              opt.crop_padding);
  if (opt.crop_padding == 0 && !opt.hflip) return x;
  NNOPT_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat, ValueError,
              "augment: expected a float32 batch [B, C, H, W], got ", x.dim(), " dims of ",
              c10::toString(x.scalar_type()));
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  std::mt19937_64 rng(seed);
  torch::Tensor out = x.contiguous();
  if (opt.crop_padding > 0) {
    const int64_t p = opt.crop_padding;
    std::vector<int64_t> dy(B), dx(B);
    for (int64_t b = 0; b < B; ++b) {
      dy[b] = uniform_below(rng, 2 * p + 1);
      dx[b] = uniform_below(rng, 2 * p + 1);
    }
    torch::Tensor cropped = torch::empty_like(out, torch::MemoryFormat::Contiguous);
    crop_shifted(out.data_ptr<float>(), cropped.data_ptr<float>(), B, C, H, W, p, dy, dx);
    out = cropped;
  }
  if (opt.hflip) {
    std::vector<int64_t> flipped;
    for (int64_t b = 0; b < B; ++b) {
      if (rng() >> 63) flipped.push_back(b);
    }
    if (!flipped.empty()) {
      if (out.is_same(x)) out = out.clone();
      torch::Tensor idx = torch::tensor(flipped, torch::kLong);
      out.index_copy_(0, idx, out.index_select(0, idx).flip({3}));
    }
  }
  return out;
}

DataLoader::DataLoader(const Dataset& data, LoaderOptions opt) : data_(data), opt_(std::move(opt)) {
  NNOPT_CHECK(opt_.batch_size > 0, ValueError, "DataLoader: batch_size must be > 0, got ",
              opt_.batch_size);
  NNOPT_CHECK(data_.size() > 0, ValueError, "DataLoader: dataset '", data_.name, "' is empty");
  NNOPT_CHECK(data_.labels.defined() && data_.labels.dim() == 1 &&
                  data_.labels.size(0) == data_.size(),
              ValueError, "DataLoader: dataset '", data_.name, "' has ", data_.size(),
              " images but labels of a different length");
  NNOPT_CHECK(opt_.augment.crop_padding >= 0, ValueError,
              "DataLoader: augment.crop_padding must be >= 0, got ", opt_.augment.crop_padding);
  const bool augments = opt_.augment.crop_padding > 0 || opt_.augment.hflip;
  NNOPT_CHECK(!augments || (data_.images.dim() == 4 && data_.images.scalar_type() == torch::kFloat),
              ValueError, "DataLoader: augmentation needs float32 images [N, C, H, W], dataset '",
              data_.name, "' has ", data_.images.dim(), " dims of ",
              c10::toString(data_.images.scalar_type()));
}

DataLoader::~DataLoader() { stop_worker(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = data_.size(), bs = opt_.batch_size;
  return opt_.drop_last ? n / bs : (n + bs - 1) / bs;
}

int64_t DataLoader::size() const { return data_.size(); }

const Dataset& DataLoader::dataset() const { return data_; }

void DataLoader::start_epoch(int64_t epoch) {
  NNOPT_CHECK(epoch >= 0, ValueError, "DataLoader: epoch must be >= 0, got ", epoch);
  stop_worker();
  epoch_ = epoch;
  const int64_t n = data_.size();
  order_ = opt_.shuffle ? random_permutation(n, mix_seed(opt_.seed, uint64_t(epoch)))
                        : torch::arange(n, torch::kLong);
  next_index_ = 0;
  started_ = true;
  if (opt_.prefetch && num_batches() > 0) worker_ = std::thread(&DataLoader::worker_loop, this);
}

Batch DataLoader::make_batch(int64_t index) const {
  torch::NoGradGuard no_grad;
  const int64_t begin = index * opt_.batch_size;
  const int64_t len = std::min(opt_.batch_size, data_.size() - begin);
  torch::Tensor idx = order_.narrow(0, begin, len);
  Batch b;
  b.x = data_.images.index_select(0, idx);  // [B, C, H, W], a copy
  b.y = data_.labels.index_select(0, idx);  // [B]
  // Augmentation randomness: a function of (seed, epoch, batch index) only.
  const uint64_t aug_seed = mix_seed(mix_seed(opt_.seed ^ 0xa5a5a5a5ULL, uint64_t(epoch_)), uint64_t(index));
  b.x = augment_batch(b.x, opt_.augment, aug_seed);
  b.index = index;
  b.samples = idx;
  b.augmented = opt_.augment.crop_padding > 0 || opt_.augment.hflip;
  return b;
}

void DataLoader::worker_loop() {
  const int64_t total = num_batches();
  for (int64_t i = 0; i < total; ++i) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || queue_.size() < kDepth; });
      if (stop_) return;
    }
    Slot slot;
    try {
      slot.batch = make_batch(i);
    } catch (...) {
      slot.error = std::current_exception();
    }
    const bool failed = slot.error != nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
      queue_.push_back(std::move(slot));
    }
    cv_.notify_all();
    if (failed) return;
  }
}

void DataLoader::stop_worker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  queue_.clear();
  stop_ = false;
}

bool DataLoader::next(Batch& out) {
  if (!started_) start_epoch(0);
  if (next_index_ >= num_batches()) return false;
  if (!opt_.prefetch) {
    try {
      out = make_batch(next_index_);
    } catch (...) {
      next_index_ = num_batches();  // same as with prefetch: the epoch ends here
      throw;
    }
    ++next_index_;
    return true;
  }
  Slot slot;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !queue_.empty(); });
    slot = std::move(queue_.front());
    queue_.pop_front();
  }
  cv_.notify_all();
  if (slot.error) {
    next_index_ = num_batches();  // the epoch ends here; start_epoch() restarts it
    stop_worker();
    std::rethrow_exception(slot.error);
  }
  ++next_index_;
  out = std::move(slot.batch);
  return true;
}

}  // namespace nnopt
