#pragma once
// The scale table: the calibration result as a small, readable JSON artifact
// (the ncnn2table -> ncnn2int8 split). Calibrate once, save, diff, then
// re-apply to a fresh model without recalibrating.
//
// Format (version 1):
//   {
//     "format": "nnopt-scale-table", "version": 1,
//     "nodes": {
//       "conv1": {
//         "weight":     {"bits": 8, "signed": true, "symmetric": true, "per_channel": true,
//                        "ch_axis": 0, "narrow_range": false, "quant_min": -128, "quant_max": 127,
//                        "observer": "minmax", "scale": [0.0123, ...], "zero_point": [0, ...]},
//         "activation": {..., "per_channel": false, "scale": [0.05], "zero_point": [3]}
//       },
//       "avgpool": {"activation": {..., "follows": "layer3.0.relu2"}}
//     }
//   }
// "quant_min"/"quant_max" are informational (derived from the scheme; checked on load);
// "observer" and "follows" are optional. Scales are float32 values written
// with enough digits to read back exactly.
#include <torch/torch.h>

#include <map>
#include <optional>
#include <string>

#include "nnopt/quant/scheme.h"

namespace nnopt {

/// One quantizer of a node.
struct QuantizerRecord {
  QuantScheme scheme;
  QParams qparams;
  std::string observer;  ///< registry name of its observer ("" = none)
  std::string follows;   ///< node whose activation qparams it copies ("" = own)
};

/// The quantizers of one node.
struct ScaleTableEntry {
  std::optional<QuantizerRecord> weight;      ///< conv2d / linear weights
  std::optional<QuantizerRecord> activation;  ///< the node's output
};

struct ScaleTable {
  std::map<std::string, ScaleTableEntry> nodes;

  std::string to_json(int indent = 2) const;
  /// Parses and checks the structure (keys, types, bits, scale/zero-point counts
  /// and ranges). Throws ValueError "SOURCE: node 'conv1' weight: missing key 'scale'".
  static ScaleTable from_json(const std::string& text, const std::string& source = "scale table");
  /// Atomic write (temp file, fsync, rename). FileError naming the path.
  void save(const std::string& path) const;
  /// FileError for a missing/unreadable file or invalid JSON; ValueError
  /// (naming the path and the node) for bad contents.
  static ScaleTable load(const std::string& path);
  /// One line per quantizer: node, kind, scheme, scale range, zero points.
  std::string summary() const;
  bool operator==(const ScaleTable& o) const;
};

}  // namespace nnopt
