#pragma once
// Compressed checkpoints for unstructured-sparse models.
//
// The file is an ordinary nnopt checkpoint (nn/checkpoint.h). Every conv2d /
// linear weight that is at least `min_sparsity` zeros is stored as
//   "__sparse.<node>.weight.bits"    uint8 [ceil(n / 8)]: the nonzero pattern,
//                                    1 bit per weight, least significant bit first
//   "__sparse.<node>.values"         float32 [nnz]: the nonzero values in order
// instead of the dense tensor, and the metadata gains
//   "sparse": {"<node>.weight": [shape...], ...}.
// At 90 % sparsity a float32 weight takes 0.1 * 4 + 1/8 = 0.525 bytes per
// element instead of 4 (7.6x). Every other tensor stays dense.
// load_sparse_model restores the dense model (and loads dense checkpoints
// too); plain load_model skips "__" tensors and so cannot read these files.
#include <string>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

/// Saves `model` (masks baked into a copy of the weights; the model is not
/// changed) with sparse weights compressed. ValueError if a node carries a
/// transform other than a pruning mask (quantizers: convert first).
/// Returns the number of weights stored compressed.
int64_t save_sparse_model(const std::string& path, GraphModule& model, const std::string& meta_json = "{}",
                          double min_sparsity = 0.5);

/// Loads a checkpoint written by save_sparse_model (or save_model) into a
/// dense model. FileError naming the path for a missing or inconsistent
/// sparse entry (bit count, number of values).
GraphModule load_sparse_model(const std::string& path, std::string* meta_json = nullptr);

}  // namespace nnopt
