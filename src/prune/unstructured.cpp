#include "nnopt/prune/unstructured.h"

#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/nn/transform_chain.h"

namespace nnopt {

MaskTransformImpl::MaskTransformImpl(const torch::Tensor& mask) {
  mask_ = register_buffer("mask", mask.detach().to(torch::kFloat).clone());
}

torch::Tensor MaskTransformImpl::forward(const torch::Tensor& w) { return w * mask_; }

std::string MaskTransformImpl::describe() const {
  double zeros = 1.0 - mask_.mean().item<double>();
  char buf[32];
  std::snprintf(buf, sizeof buf, "mask(%.1f %%)", 100 * zeros);
  return buf;
}

void MaskTransformImpl::set_mask(const torch::Tensor& mask) {
  NNOPT_CHECK(mask.sizes() == mask_.sizes(), ValueError, "mask of shape ", mask.sizes(),
              " does not fit a weight of shape ", mask_.sizes());
  torch::NoGradGuard ng;
  mask_.copy_(mask.to(torch::kFloat));
}

std::vector<std::string> prunable_weights(const Graph& g) {
  std::vector<std::string> out;
  for (const auto& n : g.nodes())
    if (n.op == OpKind::kConv2d || n.op == OpKind::kLinear) out.push_back(n.name);
  return out;
}

namespace {

std::shared_ptr<MaskTransformImpl> find_mask(GraphModule& model, const std::string& node) {
  for (auto& t : weight_transforms(model, node))
    if (auto m = std::dynamic_pointer_cast<MaskTransformImpl>(t)) return m;
  return nullptr;
}

// |w| of the weight with its current mask applied (pruned weights stay at 0).
torch::Tensor masked_abs(GraphModule& model, const std::string& node) {
  auto w = model->node_module(node).weight.detach().abs();
  if (auto m = find_mask(model, node)) w = w * m->mask();
  return w;
}

// Keeps the largest (1 - sparsity) fraction of `scores` (flattened); exact count.
torch::Tensor keep_largest(const torch::Tensor& scores, double sparsity) {
  int64_t n = scores.numel();
  int64_t drop = static_cast<int64_t>(std::llround(sparsity * static_cast<double>(n)));
  auto flat = torch::ones({n}, torch::kBool);
  if (drop > 0) {
    auto idx = std::get<1>(scores.reshape({-1}).topk(drop, 0, /*largest=*/false, /*sorted=*/false));
    flat.index_fill_(0, idx, false);
  }
  return flat;
}

}  // namespace

MaskMap magnitude_masks(GraphModule& model, double sparsity, bool global) {
  NNOPT_CHECK(sparsity >= 0 && sparsity < 1, ValueError, "magnitude pruning: sparsity must be in [0, 1), got ",
              sparsity);
  torch::NoGradGuard ng;
  auto nodes = prunable_weights(model->graph());
  NNOPT_CHECK(!nodes.empty(), ValueError, "magnitude pruning: the model has no conv2d or linear layer");
  MaskMap out;
  if (global) {
    std::vector<torch::Tensor> parts;
    for (const auto& n : nodes) parts.push_back(masked_abs(model, n).reshape({-1}));
    auto keep = keep_largest(torch::cat(parts), sparsity);
    int64_t off = 0;
    for (size_t i = 0; i < nodes.size(); ++i) {
      auto shape = model->node_module(nodes[i]).weight.sizes();
      int64_t k = parts[i].numel();
      out[nodes[i]] = keep.slice(0, off, off + k).reshape(shape).clone();
      off += k;
    }
  } else {
    for (const auto& n : nodes) {
      auto a = masked_abs(model, n);
      out[n] = keep_largest(a, sparsity).reshape(a.sizes());
    }
  }
  return out;
}

MaskMap nm_masks(GraphModule& model, int64_t n, int64_t m) {
  NNOPT_CHECK(n > 0 && n < m, ValueError, "N:M pruning needs 0 < N < M, got ", n, ":", m);
  torch::NoGradGuard ng;
  MaskMap out;
  for (const auto& node : prunable_weights(model->graph())) {
    auto a = masked_abs(model, node);
    // [out, in, kh, kw] -> [out, kh, kw, in]: blocks run along the input channels.
    auto t = a.dim() == 4 ? a.permute({0, 2, 3, 1}) : a;
    int64_t in = t.size(-1);
    if (in % m != 0) continue;
    auto blocks = t.reshape({-1, m});                               // [rows * in / m, m]
    auto idx = std::get<1>(blocks.topk(n, 1, /*largest=*/true, /*sorted=*/false));
    auto keep = torch::zeros_like(blocks, torch::kBool).scatter_(1, idx, true);
    keep = keep.reshape(t.sizes());
    out[node] = a.dim() == 4 ? keep.permute({0, 3, 1, 2}).contiguous() : keep;
  }
  NNOPT_CHECK(!out.empty(), ValueError, "N:M pruning ", n, ":", m,
              ": no conv2d or linear layer has a multiple of ", m, " input channels");
  return out;
}

void apply_masks(GraphModule& model, const MaskMap& masks) {
  for (const auto& [node, mask] : masks) {
    const auto& w = model->node_module(node).weight;
    NNOPT_CHECK(w.defined() && mask.sizes() == w.sizes(), ValueError, "mask for '", node,
                "' has shape ", mask.sizes(), " but the weight has ", w.sizes());
    if (auto m = find_mask(model, node)) {
      m->set_mask(mask);
    } else {
      add_weight_transform(model, node, std::make_shared<MaskTransformImpl>(mask));
    }
  }
}

MaskMap current_masks(GraphModule& model) {
  MaskMap out;
  for (const auto& n : prunable_weights(model->graph()))
    if (auto m = find_mask(model, n)) out[n] = m->mask() != 0;
  return out;
}

void bake_masks(GraphModule& model) {
  torch::NoGradGuard ng;
  for (const auto& n : prunable_weights(model->graph())) {
    auto m = find_mask(model, n);
    if (!m) continue;
    model->node_module(n).weight.mul_(m->mask());
    remove_weight_transforms(model, n, [](const TransformPtr& t) {
      return std::dynamic_pointer_cast<MaskTransformImpl>(t) != nullptr;
    });
  }
}

double weight_sparsity(GraphModule& model) {
  torch::NoGradGuard ng;
  int64_t zeros = 0, total = 0;
  for (const auto& n : prunable_weights(model->graph())) {
    auto w = model->effective_weight(n);
    zeros += (w == 0).sum().item<int64_t>();
    total += w.numel();
  }
  return total ? static_cast<double>(zeros) / total : 0.0;
}

}  // namespace nnopt
