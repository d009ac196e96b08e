#include "nnopt/nn/transform_chain.h"

#include "nnopt/core/error.h"

namespace nnopt {

TransformChainImpl::TransformChainImpl(std::vector<TransformPtr> parts) : parts_(std::move(parts)) {
  for (size_t i = 0; i < parts_.size(); ++i) {
    NNOPT_CHECK(parts_[i] != nullptr, ValueError, "transform chain: part ", i, " is null");
    register_module(std::to_string(i), parts_[i]);
  }
}

torch::Tensor TransformChainImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = x;
  for (auto& p : parts_) y = p->forward(y);
  return y;
}

std::string TransformChainImpl::describe() const {
  std::string s = "chain(";
  for (size_t i = 0; i < parts_.size(); ++i) s += (i ? " -> " : "") + parts_[i]->describe();
  return s + ")";
}

std::vector<TransformPtr> weight_transforms(GraphModule& model, const std::string& node) {
  TransformPtr cur = model->node_module(node).weight_transform;
  if (!cur) return {};
  if (auto chain = std::dynamic_pointer_cast<TransformChainImpl>(cur)) return chain->parts();
  return {cur};
}

void add_weight_transform(GraphModule& model, const std::string& node, TransformPtr t) {
  NNOPT_CHECK(t != nullptr, ValueError, "add_weight_transform: null transform for node '", node, "'");
  auto parts = weight_transforms(model, node);
  parts.push_back(std::move(t));
  model->set_weight_transform(node, nullptr);
  model->set_weight_transform(
      node, parts.size() == 1 ? parts[0] : std::make_shared<TransformChainImpl>(parts));
}

void remove_weight_transforms(GraphModule& model, const std::string& node,
                              const std::function<bool(const TransformPtr&)>& drop) {
  auto parts = weight_transforms(model, node);
  std::vector<TransformPtr> keep;
  for (auto& p : parts)
    if (!drop(p)) keep.push_back(p);
  if (keep.size() == parts.size()) return;
  model->set_weight_transform(node, nullptr);
  if (keep.size() == 1) model->set_weight_transform(node, keep[0]);
  if (keep.size() > 1) model->set_weight_transform(node, std::make_shared<TransformChainImpl>(keep));
}

}  // namespace nnopt
