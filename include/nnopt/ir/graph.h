#pragma once
// nnopt::Graph — the one model description every family transforms.
//
// A Graph is a DAG of named nodes kept in topological order. Each node has an
// op kind, typed attributes (one struct per op), its input node names and its
// inferred per-sample output shape (no batch dimension: [C, H, W] or [F]).
// Dimension attributes that PyTorch counts with the batch (flatten start_dim,
// concat dim) are stored the PyTorch way, batch included.
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <variant>
#include <vector>

namespace nnopt {

/// Per-sample shape, batch dimension excluded.
using Shape = std::vector<int64_t>;
using Pair = std::array<int64_t, 2>;

enum class OpKind : int {
  kInput = 0,
  kConv2d,
  kLinear,
  kBatchNorm,
  kReLU,
  kReLU6,
  kHardswish,
  kMaxPool,
  kAvgPool,
  kGlobalAvgPool,
  kFlatten,
  kAdd,
  kConcat,
  kDropout,
  kIdentity,
  kCount
};

/// Stable lowercase name used in JSON and messages ("conv2d", "batch_norm", ...).
const char* op_name(OpKind op);
/// Inverse of op_name; throws GraphError listing the known names.
OpKind op_from_name(const std::string& name);

struct NoAttrs {};
struct InputAttrs {
  Shape shape;  ///< per-sample input shape, e.g. {1, 28, 28}
};
struct Conv2dAttrs {
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  Pair kernel{1, 1};
  Pair stride{1, 1};
  Pair padding{0, 0};
  Pair dilation{1, 1};
  int64_t groups = 1;  ///< groups == in_channels == out_channels is depthwise
  bool bias = true;
};
struct LinearAttrs {
  int64_t in_features = 0;
  int64_t out_features = 0;
  bool bias = true;
};
struct BatchNormAttrs {
  int64_t num_features = 0;
  double eps = 1e-5;
  double momentum = 0.1;
  bool affine = true;
};
struct PoolAttrs {  ///< max_pool and avg_pool
  Pair kernel{2, 2};
  Pair stride{2, 2};
  Pair padding{0, 0};
  bool ceil_mode = false;
  bool count_include_pad = true;  ///< avg_pool only
};
struct FlattenAttrs {
  int64_t start_dim = 1;  ///< PyTorch dim, batch included; must be >= 1
};
struct ConcatAttrs {
  int64_t dim = 1;  ///< PyTorch dim, batch included; must be >= 1
};
struct DropoutAttrs {
  double p = 0.5;
};

using Attrs = std::variant<NoAttrs, InputAttrs, Conv2dAttrs, LinearAttrs, BatchNormAttrs,
                           PoolAttrs, FlattenAttrs, ConcatAttrs, DropoutAttrs>;

/// The attribute type each op kind carries; a table indexed by OpKind.
Attrs default_attrs(OpKind op);

struct Node {
  std::string name;                 ///< unique dotted name, e.g. "stage2.block1.conv1"
  OpKind op = OpKind::kIdentity;
  Attrs attrs;
  std::vector<std::string> inputs;  ///< names of the producing nodes
  Shape shape;                      ///< inferred per-sample output shape

  /// Typed attribute access; throws GraphError naming the node if the type is wrong.
  template <typename T>
  const T& as() const {
    const T* p = std::get_if<T>(&attrs);
    if (!p) throw_wrong_attrs();
    return *p;
  }
  template <typename T>
  T& as() {
    T* p = std::get_if<T>(&attrs);
    if (!p) throw_wrong_attrs();
    return *p;
  }
  /// True for ops that own parameters (conv2d, linear, batch_norm).
  bool has_params() const;

 private:
  [[noreturn]] void throw_wrong_attrs() const;
};

/// Per-node statistics: parameter count and multiply-accumulates for one sample.
struct LayerStats {
  std::string name;
  OpKind op;
  Shape shape;
  int64_t params = 0;
  int64_t macs = 0;
};

class Graph {
 public:
  Graph() = default;

  // ---- building (each returns the new node's name, so calls chain) ----
  /// Adds a node and returns its name. Its inputs must already exist (this keeps topological order).
  /// Throws GraphError on a duplicate or empty name, an unknown input, or
  /// attributes of the wrong type. Shapes are inferred at once.
  std::string add(std::string name, OpKind op, Attrs attrs,
                         std::vector<std::string> inputs);
  std::string input(const std::string& name, Shape shape);
  std::string conv2d(const std::string& name, const std::string& in, int64_t out_channels,
                            int64_t kernel, int64_t stride = 1, int64_t padding = 0,
                            int64_t groups = 1, bool bias = false);
  std::string linear(const std::string& name, const std::string& in, int64_t out_features,
                            bool bias = true);
  std::string batch_norm(const std::string& name, const std::string& in);
  std::string unary(const std::string& name, OpKind op, const std::string& in);
  std::string max_pool(const std::string& name, const std::string& in, int64_t kernel,
                              int64_t stride, int64_t padding = 0);
  std::string avg_pool(const std::string& name, const std::string& in, int64_t kernel,
                              int64_t stride, int64_t padding = 0);
  std::string flatten(const std::string& name, const std::string& in);
  std::string add_op(const std::string& name, std::vector<std::string> ins);
  std::string concat(const std::string& name, std::vector<std::string> ins);
  std::string dropout(const std::string& name, const std::string& in, double p);

  /// The node whose output is the model output (default: the last node added).
  void set_output(const std::string& name);
  const std::string& output() const;
  /// The single input node's name.
  const std::string& input_name() const;
  const Shape& input_shape() const;
  const Shape& output_shape() const;

  // ---- access ----
  const std::vector<Node>& nodes() const { return nodes_; }
  size_t size() const { return nodes_.size(); }
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  size_t index_of(const std::string& name) const;  ///< throws GraphError if unknown
  const Node& node(const std::string& name) const { return nodes_[index_of(name)]; }
  /// Mutable access; call infer_shapes() after changing attributes.
  Node& mutable_node(const std::string& name) { return nodes_[index_of(name)]; }
  /// Names of the nodes that read `name`'s output, in graph order.
  std::vector<std::string> consumers(const std::string& name) const;

  // ---- checking and counting ----
  /// Re-infers every shape in order and checks every node; throws GraphError
  /// naming the first bad node and the problem.
  void infer_shapes();
  /// Same checks as infer_shapes on a copy; the graph is unchanged.
  void validate() const;
  std::vector<LayerStats> layer_stats() const;
  int64_t num_params() const;
  int64_t macs() const;  ///< multiply-accumulates of one forward pass of one sample

  // ---- serialization ----
  std::string to_json(int indent = 2) const;
  /// Throws GraphError on malformed JSON, unknown ops or keys, or an invalid graph.
  static Graph from_json(const std::string& text);

  /// A readable table: name, op, output shape, params, MACs.
  std::string summary() const;

  bool operator==(const Graph& o) const;

 private:
  void infer_node(Node& n) const;
  std::vector<Node> nodes_;
  std::unordered_map<std::string, size_t> index_;
  std::string output_;
};

/// Parameter count of a single node (0 for ops without parameters).
int64_t node_params(const Node& n);
/// MACs of a single node for one sample (conv2d and linear; 0 otherwise).
int64_t node_macs(const Node& n, const Graph& g);

}  // namespace nnopt
