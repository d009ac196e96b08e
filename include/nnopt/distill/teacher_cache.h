#pragma once
// TeacherCache: a fixed teacher's outputs (logits and tapped feature maps) by
// dataset position, so that a sample's teacher pass runs once, not once per
// epoch (and, shared, once per study rather than once per run).
//
// Valid only while the inputs at a position never change: no augmentation,
// one dataset, one teacher (eval mode, fixed weights). DistillCallback uses it
// only for unaugmented batches; compare_distill shares one per teacher across
// all its runs. A cached row equals a recomputed one up to the float rounding
// of a different batch composition.
//
// Memory: rows are kept for every position seen (logits [N, K] and each tap
// [N, C, H, W]); an entry that would take the cache above `limit_bytes` is not
// stored, and batches that need it run the teacher as without a cache.
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nnopt/distill/teacher.h"

namespace nnopt {

class TeacherCache {
 public:
  explicit TeacherCache(int64_t limit_bytes = int64_t(2) << 30);

  /// Teacher logits [B, K] for inputs x [B, ...] at dataset positions
  /// `positions` (int64 [B]), and the tapped outputs in `out`: from the cache
  /// when every requested row is there, else from teacher.forward (then stored).
  torch::Tensor forward(Teacher& teacher, const torch::Tensor& x, const torch::Tensor& positions,
                        const std::vector<std::string>& taps, TensorMap& out);

  int64_t hits() const { return hits_; }          ///< rows served from the cache
  int64_t computed() const { return computed_; }  ///< rows the teacher computed
  int64_t bytes() const;                          ///< memory held by the cache
  void clear();

 private:
  struct Entry {
    torch::Tensor rows;    // [N, ...]
    torch::Tensor filled;  // bool [N]
    bool disabled = false; // over the memory limit
  };
  bool has(const std::string& key, const torch::Tensor& positions, int64_t need) const;
  void store(const std::string& key, const torch::Tensor& value, const torch::Tensor& positions,
             int64_t need);
  int64_t limit_;
  std::map<std::string, Entry> entries_;  // "" = logits, else the tap name
  int64_t hits_ = 0, computed_ = 0;
};
using TeacherCachePtr = std::shared_ptr<TeacherCache>;

}  // namespace nnopt
