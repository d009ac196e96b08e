// FusedSGD; see fused_sgd.h.
#include "nnopt/train/fused_sgd.h"

#include <ATen/Parallel.h>
#include <c10/util/string_utils.h>

namespace nnopt {

namespace {
// Elements per parallel chunk: small tensors run on the calling thread.
constexpr int64_t kGrain = 32768;

// Both dense and in the same element order (strides may differ only along
// size-1 dimensions, e.g. NHWC weights of a 1x1 conv), so one index walks both.
bool same_layout(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || !a.is_non_overlapping_and_dense() || !b.is_non_overlapping_and_dense())
    return false;
  for (int64_t d = 0; d < a.dim(); ++d)
    if (a.size(d) > 1 && a.stride(d) != b.stride(d)) return false;
  return true;
}
}  // namespace

torch::Tensor FusedSGD::step(LossClosure closure) {
  torch::NoGradGuard no_grad;
  torch::Tensor loss = {};
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups_) {
    auto& o = static_cast<torch::optim::SGDOptions&>(group.options());
    const double lr = o.lr(), momentum = o.momentum(), dampening = o.dampening(), wd = o.weight_decay();
    const bool nesterov = o.nesterov();
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const torch::Tensor& g = p.grad();
      const std::string key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state_.find(key);
      const bool first = it == state_.end();
      const bool fusable = p.scalar_type() == torch::kFloat32 && g.scalar_type() == torch::kFloat32 &&
                           !g.is_sparse() && same_layout(p, g) && p.device().is_cpu();
      if (!fusable) {
        // The op-by-op formula of torch::optim::SGD.
        torch::Tensor d = g;
        if (wd != 0) d = d.add(p, wd);
        if (momentum != 0) {
          torch::Tensor buf;
          if (first) {
            buf = torch::clone(d).detach();
            auto s = std::make_unique<torch::optim::SGDParamState>();
            s->momentum_buffer(buf);
            state_[key] = std::move(s);
          } else {
            buf = static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
            buf.mul_(momentum).add_(d, 1 - dampening);
          }
          d = nesterov ? d.add(buf, momentum) : buf;
        }
        p.add_(d, -lr);
        continue;
      }
      float* w = p.data_ptr<float>();
      const float* gp = g.data_ptr<float>();
      float* b = nullptr;
      if (momentum != 0) {
        if (first) {
          auto s = std::make_unique<torch::optim::SGDParamState>();
          s->momentum_buffer(torch::empty_like(p));  // p's strides: one index walks all three
          b = s->momentum_buffer().data_ptr<float>();
          state_[key] = std::move(s);
        } else {
          torch::Tensor& buf = static_cast<torch::optim::SGDParamState&>(*it->second).momentum_buffer();
          if (!same_layout(buf, p) || buf.scalar_type() != torch::kFloat32)
            buf = torch::empty_like(p).copy_(buf);  // e.g. loaded NCHW, parameter now NHWC
          b = buf.data_ptr<float>();
        }
      }
      const float flr = static_cast<float>(lr), fm = static_cast<float>(momentum),
                  fdamp = static_cast<float>(1 - dampening), fwd = static_cast<float>(wd);
      const bool has_wd = wd != 0, has_m = momentum != 0;
      at::parallel_for(0, p.numel(), kGrain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) {
          float d = has_wd ? gp[i] + fwd * w[i] : gp[i];
          if (has_m) {
            const float nb = first ? d : fm * b[i] + fdamp * d;
            b[i] = nb;
            d = nesterov ? d + fm * nb : nb;
          }
          w[i] -= flr * d;
        }
      });
    }
  }
  return loss;
}

}  // namespace nnopt
