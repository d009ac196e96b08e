// TeacherCache; see teacher_cache.h.
#include "nnopt/distill/teacher_cache.h"

#include "nnopt/core/error.h"

namespace nnopt {

TeacherCache::TeacherCache(int64_t limit_bytes) : limit_(limit_bytes) {
  NNOPT_CHECK(limit_bytes >= 0, ValueError, "teacher cache: the memory limit must be >= 0, got ",
              limit_bytes);
}

int64_t TeacherCache::bytes() const {
  int64_t b = 0;
  for (const auto& [k, e] : entries_)
    if (e.rows.defined()) b += e.rows.numel() * static_cast<int64_t>(e.rows.element_size());
  return b;
}

void TeacherCache::clear() {
  entries_.clear();
  hits_ = computed_ = 0;
}

bool TeacherCache::has(const std::string& key, const torch::Tensor& positions, int64_t need) const {
  auto it = entries_.find(key);
  if (it == entries_.end() || it->second.disabled || !it->second.rows.defined()) return false;
  const Entry& e = it->second;
  if (e.rows.size(0) < need) return false;
  return e.filled.index_select(0, positions).all().item<bool>();
}

void TeacherCache::store(const std::string& key, const torch::Tensor& value,
                         const torch::Tensor& positions, int64_t need) {
  Entry& e = entries_[key];
  if (e.disabled) return;
  if (!e.rows.defined() || e.rows.size(0) < need) {
    // Grow to at least twice the old size, so a first epoch in shuffled order
    // reallocates O(log N) times.
    const int64_t old = e.rows.defined() ? e.rows.size(0) : 0;
    const int64_t rows = std::max(need, 2 * old);
    std::vector<int64_t> shape = value.sizes().vec();
    shape[0] = rows;
    const int64_t add = (rows - old) * (value.numel() / std::max<int64_t>(1, value.size(0))) *
                        static_cast<int64_t>(value.element_size());
    if (bytes() + add > limit_) {
      e.disabled = true;  // the teacher runs for batches that need this entry
      e.rows = e.filled = torch::Tensor();
      return;
    }
    torch::Tensor r = torch::zeros(shape, value.options());
    torch::Tensor f = torch::zeros({rows}, torch::kBool);
    if (old > 0) {
      r.narrow(0, 0, old).copy_(e.rows);
      f.narrow(0, 0, old).copy_(e.filled);
    }
    e.rows = r;
    e.filled = f;
  }
  e.rows.index_copy_(0, positions, value.detach());
  e.filled.index_fill_(0, positions, true);
}

torch::Tensor TeacherCache::forward(Teacher& teacher, const torch::Tensor& x,
                                    const torch::Tensor& positions,
                                    const std::vector<std::string>& taps, TensorMap& out) {
  NNOPT_CHECK(positions.defined() && positions.dim() == 1 && positions.size(0) == x.size(0),
              ValueError, "teacher cache: need one dataset position per sample, got ",
              positions.defined() ? positions.sizes() : c10::IntArrayRef{}, " for a batch of ",
              x.size(0));
  torch::NoGradGuard no_grad;
  const torch::Tensor pos = positions.to(torch::kLong);
  const int64_t need = pos.numel() > 0 ? pos.max().item<int64_t>() + 1 : 0;
  bool hit = has("", pos, need);
  for (const auto& t : taps) hit = hit && has(t, pos, need);
  if (hit) {
    hits_ += pos.numel();
    for (const auto& t : taps) out[t] = entries_.at(t).rows.index_select(0, pos);
    return entries_.at("").rows.index_select(0, pos);
  }
  torch::Tensor z = teacher.forward(x, taps, out);
  computed_ += pos.numel();
  store("", z, pos, need);
  for (const auto& t : taps) store(t, out.at(t), pos, need);
  return z;
}

}  // namespace nnopt
