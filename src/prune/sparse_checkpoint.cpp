#include "nnopt/prune/sparse_checkpoint.h"

#include <nlohmann/json.hpp>

#include "nnopt/core/error.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/transform_chain.h"
#include "nnopt/prune/unstructured.h"

namespace nnopt {
using json = nlohmann::json;

namespace {

const torch::Tensor& bit_weights() {
  static const torch::Tensor w = torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, torch::kUInt8);
  return w;
}

// bool [n] -> uint8 [ceil(n / 8)], LSB first
torch::Tensor pack_bits(const torch::Tensor& keep) {
  int64_t n = keep.numel();
  int64_t padded = (n + 7) / 8 * 8;
  auto b = torch::zeros({padded}, torch::kUInt8);
  b.slice(0, 0, n).copy_(keep.reshape({-1}).to(torch::kUInt8));
  return (b.reshape({-1, 8}) * bit_weights()).sum(1).to(torch::kUInt8);
}

// uint8 [ceil(n / 8)] -> bool [n]
torch::Tensor unpack_bits(const torch::Tensor& bytes, int64_t n) {
  auto bits = bytes.reshape({-1, 1}).bitwise_and(bit_weights()).ne(0);
  return bits.reshape({-1}).slice(0, 0, n);
}

}  // namespace

int64_t save_sparse_model(const std::string& path, GraphModule& model, const std::string& meta_json,
                          double min_sparsity) {
  torch::NoGradGuard ng;
  Checkpoint ck;
  ck.graph = model->graph();
  json meta;
  try {
    meta = json::parse(meta_json);
  } catch (const json::exception& e) {
    throw ValueError(str_cat("save_sparse_model: metadata is not valid JSON: ", e.what()));
  }
  // Model tensors without the transforms' own buffers (the masks get baked in).
  for (const auto& [name, t] : model->state())
    if (name.find(".weight_transform.") == std::string::npos &&
        name.find(".act_transform.") == std::string::npos)
      ck.tensors[name] = t.detach();
  for (const auto& n : model->graph().nodes()) {
    auto& m = model->node_module(n.name);
    NNOPT_CHECK(!m.act_transform, ValueError, "save_sparse_model: node '", n.name,
                "' carries an activation transform; remove quantizers first");
  }
  json sparse = json::object();
  int64_t count = 0;
  for (const auto& node : prunable_weights(model->graph())) {
    for (const auto& t : weight_transforms(model, node))
      NNOPT_CHECK(std::dynamic_pointer_cast<MaskTransformImpl>(t) != nullptr, ValueError,
                  "save_sparse_model: node '", node, "' carries a ", t->describe(),
                  " weight transform; only pruning masks can be saved sparse");
    auto w = model->effective_weight(node).detach().to(torch::kFloat).contiguous();
    auto keep = w.ne(0);
    double zeros = 1.0 - keep.to(torch::kDouble).mean().item<double>();
    std::string key = node + ".weight";
    if (zeros < min_sparsity) {
      ck.tensors[key] = w;
      continue;
    }
    ck.tensors.erase(key);
    ck.tensors["__sparse." + key + ".bits"] = pack_bits(keep);
    ck.tensors["__sparse." + key + ".values"] = w.reshape({-1}).masked_select(keep.reshape({-1}));
    sparse[key] = w.sizes().vec();
    ++count;
  }
  meta["sparse"] = sparse;
  ck.meta_json = meta.dump();
  save_checkpoint(path, ck);
  return count;
}

GraphModule load_sparse_model(const std::string& path, std::string* meta_json) {
  Checkpoint ck = load_checkpoint(path);
  json meta = json::parse(ck.meta_json);
  TensorMap dense;
  for (const auto& [name, t] : ck.tensors)
    if (name.rfind("__", 0) != 0) dense[name] = t;
  if (meta.contains("sparse")) {
    NNOPT_CHECK(meta["sparse"].is_object(), FileError, path, ": metadata 'sparse' must be an object");
    for (const auto& [key, shape_j] : meta["sparse"].items()) {
      auto bits = ck.tensors.find("__sparse." + key + ".bits");
      auto vals = ck.tensors.find("__sparse." + key + ".values");
      NNOPT_CHECK(bits != ck.tensors.end() && vals != ck.tensors.end(), FileError, path,
                  ": sparse tensor '", key, "' lacks its bits or values");
      NNOPT_CHECK(shape_j.is_array(), FileError, path, ": sparse tensor '", key, "' has no shape");
      std::vector<int64_t> shape;
      int64_t n = 1;
      for (const auto& d : shape_j) {
        NNOPT_CHECK(d.is_number_unsigned() && d.get<int64_t>() <= (int64_t{1} << 32), FileError, path,
                    ": sparse tensor '", key, "' has a bad dimension ", d.dump());
        shape.push_back(d.get<int64_t>());
        n *= shape.back();
      }
      NNOPT_CHECK(bits->second.scalar_type() == torch::kUInt8 && bits->second.numel() == (n + 7) / 8,
                  FileError, path, ": sparse tensor '", key, "' has ", bits->second.numel(),
                  " bytes of bits for ", n, " weights");
      auto keep = unpack_bits(bits->second, n);
      int64_t nnz = keep.sum().item<int64_t>();
      NNOPT_CHECK(vals->second.scalar_type() == torch::kFloat && vals->second.numel() == nnz, FileError,
                  path, ": sparse tensor '", key, "' has ", vals->second.numel(), " values for ", nnz,
                  " nonzero bits");
      auto w = torch::zeros({n}, torch::kFloat);
      w.masked_scatter_(keep, vals->second);
      dense[key] = w.reshape(shape);
    }
    meta.erase("sparse");
  }
  GraphModule m(ck.graph);
  try {
    m->load_state(dense, true);
  } catch (const ValueError& e) {
    throw FileError(str_cat(path, ": ", e.what()));
  }
  if (meta_json) *meta_json = meta.dump();
  return m;
}

}  // namespace nnopt
