#pragma once
// A checkpoint is one file: graph JSON + named tensors + metadata JSON.
//
// Layout (little endian):
//   "NNOPTCK1"  8-byte magic
//   u64         header length H (bytes of JSON that follow)
//   H bytes     header JSON: {"graph": <graph>, "meta": {...},
//               "tensors": [{"name","dtype","shape","offset","nbytes"}...],
//               "data_bytes": D, "checksum": "<fnv1a64 of data, hex>"}
//   D bytes     tensor data, each tensor contiguous at its offset
// Written atomically (temp file, fsync, rename). Every header field is checked
// against the file size before anything is allocated.
#include <torch/torch.h>

#include <string>

#include "nnopt/ir/graph.h"
#include "nnopt/nn/graph_module.h"

namespace nnopt {

struct Checkpoint {
  Graph graph;
  TensorMap tensors;
  std::string meta_json = "{}";  ///< free-form metadata (training recipe, metrics, ...)
};

/// Serializes to bytes (what save_checkpoint writes).
std::string checkpoint_bytes(const Checkpoint& ck);
/// Writes atomically. Throws FileError naming the path.
void save_checkpoint(const std::string& path, const Checkpoint& ck);
/// Reads and checks a checkpoint. Throws FileError naming the path and the
/// problem: missing, not an nnopt checkpoint, truncated, corrupt header, bad
/// tensor table, checksum mismatch.
Checkpoint load_checkpoint(const std::string& path);

/// Saves a model (graph + all parameters and buffers) with metadata.
void save_model(const std::string& path, GraphModule& model, const std::string& meta_json = "{}");
/// Loads a model saved with save_model; `meta_json` receives the metadata.
GraphModule load_model(const std::string& path, std::string* meta_json = nullptr);
/// load_model on a checkpoint already read from `path` (named in errors).
GraphModule model_from_checkpoint(Checkpoint ck, const std::string& path, std::string* meta_json = nullptr);

}  // namespace nnopt
