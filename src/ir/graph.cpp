#include "nnopt/ir/graph.h"

#include <iomanip>
#include <nlohmann/json.hpp>
#include <sstream>

#include "nnopt/core/error.h"

namespace nnopt {
using json = nlohmann::json;

namespace {

struct OpInfo {
  OpKind op;
  const char* name;
  size_t attrs_index;  // index into the Attrs variant
  int min_inputs;      // -1: no check
  int max_inputs;      // -1: unbounded
};

// Indexed by OpKind.
constexpr OpInfo kOps[] = {
    {OpKind::kInput, "input", 1, 0, 0},
    {OpKind::kConv2d, "conv2d", 2, 1, 1},
    {OpKind::kLinear, "linear", 3, 1, 1},
    {OpKind::kBatchNorm, "batch_norm", 4, 1, 1},
    {OpKind::kReLU, "relu", 0, 1, 1},
    {OpKind::kReLU6, "relu6", 0, 1, 1},
    {OpKind::kHardswish, "hardswish", 0, 1, 1},
    {OpKind::kMaxPool, "max_pool", 5, 1, 1},
    {OpKind::kAvgPool, "avg_pool", 5, 1, 1},
    {OpKind::kGlobalAvgPool, "global_avg_pool", 0, 1, 1},
    {OpKind::kFlatten, "flatten", 6, 1, 1},
    {OpKind::kAdd, "add", 0, 2, -1},
    {OpKind::kConcat, "concat", 7, 1, -1},
    {OpKind::kDropout, "dropout", 8, 1, 1},
    {OpKind::kIdentity, "identity", 0, 1, 1},
};
static_assert(sizeof(kOps) / sizeof(kOps[0]) == static_cast<size_t>(OpKind::kCount),
              "every OpKind needs a row in kOps");

const OpInfo& info(OpKind op) {
  auto i = static_cast<size_t>(op);
  NNOPT_CHECK(i < static_cast<size_t>(OpKind::kCount), GraphError, "invalid op kind ", i);
  return kOps[i];
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? "," : "") << s[i];
  os << "]";
  return os.str();
}

int64_t conv_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, bool ceil_mode = false) {
  int64_t eff = d * (k - 1) + 1;
  int64_t num = in + 2 * p - eff;
  if (num < 0) return 0;
  int64_t out = ceil_mode ? (num + s - 1) / s + 1 : num / s + 1;
  // PyTorch: the last pooling window must start inside the input or left padding.
  if (ceil_mode && (out - 1) * s >= in + p) --out;
  return out;
}

json pair_json(const Pair& p) { return json::array({p[0], p[1]}); }

}  // namespace

const char* op_name(OpKind op) { return info(op).name; }

OpKind op_from_name(const std::string& name) {
  for (const auto& o : kOps)
    if (name == o.name) return o.op;
  std::string known;
  for (const auto& o : kOps) known += std::string(known.empty() ? "" : ", ") + o.name;
  throw GraphError(str_cat("unknown op '", name, "' (known: ", known, ")"));
}

Attrs default_attrs(OpKind op) {
  switch (op) {
    case OpKind::kInput: return InputAttrs{};
    case OpKind::kConv2d: return Conv2dAttrs{};
    case OpKind::kLinear: return LinearAttrs{};
    case OpKind::kBatchNorm: return BatchNormAttrs{};
    case OpKind::kMaxPool:
    case OpKind::kAvgPool: return PoolAttrs{};
    case OpKind::kFlatten: return FlattenAttrs{};
    case OpKind::kConcat: return ConcatAttrs{};
    case OpKind::kDropout: return DropoutAttrs{};
    default: return NoAttrs{};
  }
}

bool Node::has_params() const {
  return op == OpKind::kConv2d || op == OpKind::kLinear ||
         (op == OpKind::kBatchNorm && std::get<BatchNormAttrs>(attrs).affine);
}

void Node::throw_wrong_attrs() const {
  throw GraphError(str_cat("node '", name, "' (", op_name(op), "): attributes of the wrong type"));
}

// ---------------------------------------------------------------- building

std::string Graph::add(std::string name, OpKind op, Attrs attrs,
                              std::vector<std::string> inputs) {
  NNOPT_CHECK(!name.empty(), GraphError, "node name must not be empty (op ", op_name(op), ")");
  NNOPT_CHECK(!index_.count(name), GraphError, "duplicate node name '", name, "'");
  const OpInfo& oi = info(op);
  NNOPT_CHECK(attrs.index() == oi.attrs_index, GraphError, "node '", name, "' (", oi.name,
              "): attributes of the wrong type");
  for (const auto& in : inputs)
    NNOPT_CHECK(index_.count(in), GraphError, "node '", name, "': unknown input '", in,
                "' (inputs must be added before their consumers)");
  if (op == OpKind::kInput)
    for (const auto& n : nodes_)
      NNOPT_CHECK(n.op != OpKind::kInput, GraphError, "node '", name,
                  "': graph already has an input node '", n.name, "'");
  Node n;
  n.name = std::move(name);
  n.op = op;
  n.attrs = std::move(attrs);
  n.inputs = std::move(inputs);
  infer_node(n);
  index_[n.name] = nodes_.size();
  nodes_.push_back(std::move(n));
  output_ = nodes_.back().name;
  return nodes_.back().name;
}

std::string Graph::input(const std::string& name, Shape shape) {
  return add(name, OpKind::kInput, InputAttrs{std::move(shape)}, {});
}

std::string Graph::conv2d(const std::string& name, const std::string& in,
                                 int64_t out_channels, int64_t kernel, int64_t stride,
                                 int64_t padding, int64_t groups, bool bias) {
  Conv2dAttrs a;
  a.in_channels = contains(in) && !node(in).shape.empty() ? node(in).shape[0] : 0;
  a.out_channels = out_channels;
  a.kernel = {kernel, kernel};
  a.stride = {stride, stride};
  a.padding = {padding, padding};
  a.groups = groups;
  a.bias = bias;
  return add(name, OpKind::kConv2d, a, {in});
}

std::string Graph::linear(const std::string& name, const std::string& in,
                                 int64_t out_features, bool bias) {
  LinearAttrs a;
  a.in_features = contains(in) && !node(in).shape.empty() ? node(in).shape.back() : 0;
  a.out_features = out_features;
  a.bias = bias;
  return add(name, OpKind::kLinear, a, {in});
}

std::string Graph::batch_norm(const std::string& name, const std::string& in) {
  BatchNormAttrs a;
  a.num_features = contains(in) && !node(in).shape.empty() ? node(in).shape[0] : 0;
  return add(name, OpKind::kBatchNorm, a, {in});
}

std::string Graph::unary(const std::string& name, OpKind op, const std::string& in) {
  return add(name, op, default_attrs(op), {in});
}

std::string Graph::max_pool(const std::string& name, const std::string& in,
                                   int64_t kernel, int64_t stride, int64_t padding) {
  PoolAttrs a;
  a.kernel = {kernel, kernel};
  a.stride = {stride, stride};
  a.padding = {padding, padding};
  return add(name, OpKind::kMaxPool, a, {in});
}

std::string Graph::avg_pool(const std::string& name, const std::string& in,
                                   int64_t kernel, int64_t stride, int64_t padding) {
  PoolAttrs a;
  a.kernel = {kernel, kernel};
  a.stride = {stride, stride};
  a.padding = {padding, padding};
  return add(name, OpKind::kAvgPool, a, {in});
}

std::string Graph::flatten(const std::string& name, const std::string& in) {
  return add(name, OpKind::kFlatten, FlattenAttrs{}, {in});
}

std::string Graph::add_op(const std::string& name, std::vector<std::string> ins) {
  return add(name, OpKind::kAdd, NoAttrs{}, std::move(ins));
}

std::string Graph::concat(const std::string& name, std::vector<std::string> ins) {
  return add(name, OpKind::kConcat, ConcatAttrs{}, std::move(ins));
}

std::string Graph::dropout(const std::string& name, const std::string& in, double p) {
  return add(name, OpKind::kDropout, DropoutAttrs{p}, {in});
}

void Graph::set_output(const std::string& name) {
  index_of(name);
  output_ = name;
}

const std::string& Graph::output() const {
  NNOPT_CHECK(!nodes_.empty(), GraphError, "graph is empty");
  return output_;
}

const std::string& Graph::input_name() const {
  NNOPT_CHECK(!nodes_.empty() && nodes_[0].op == OpKind::kInput, GraphError,
              "graph has no input node");
  return nodes_[0].name;
}

const Shape& Graph::input_shape() const { return node(input_name()).shape; }
const Shape& Graph::output_shape() const { return node(output()).shape; }

size_t Graph::index_of(const std::string& name) const {
  auto it = index_.find(name);
  NNOPT_CHECK(it != index_.end(), GraphError, "no node named '", name, "'");
  return it->second;
}

std::vector<std::string> Graph::consumers(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& n : nodes_)
    for (const auto& in : n.inputs)
      if (in == name) {
        out.push_back(n.name);
        break;
      }
  return out;
}

// ---------------------------------------------------------------- shapes

void Graph::infer_node(Node& n) const {
  const OpInfo& oi = info(n.op);
  const int nin = static_cast<int>(n.inputs.size());
  auto fail = [&](const std::string& what) -> GraphError {
    return GraphError(str_cat("node '", n.name, "' (", oi.name, "): ", what));
  };
  if (nin < oi.min_inputs || (oi.max_inputs >= 0 && nin > oi.max_inputs))
    throw fail(str_cat("takes ", oi.min_inputs,
                   oi.max_inputs == oi.min_inputs ? "" : (oi.max_inputs < 0 ? " or more" : "+"),
                   " input(s), got ", nin));
  std::vector<const Shape*> in;
  for (const auto& name : n.inputs) {
    auto it = index_.find(name);
    if (it == index_.end()) throw fail(str_cat("unknown input '", name, "'"));
    in.push_back(&nodes_[it->second].shape);
  }
  auto need_rank = [&](size_t r) {
    if (in[0]->size() != r)
      throw fail(str_cat("expects a rank-", r, " input (per sample), got ", shape_str(*in[0])));
  };
  auto check_pos = [&](int64_t v, const char* what) {
    if (v <= 0) throw fail(str_cat(what, " must be > 0, got ", v));
  };

  switch (n.op) {
    case OpKind::kInput: {
      const auto& a = n.as<InputAttrs>();
      if (a.shape.empty()) throw fail("input shape must not be empty");
      for (auto d : a.shape) check_pos(d, "input dimension");
      n.shape = a.shape;
      break;
    }
    case OpKind::kConv2d: {
      const auto& a = n.as<Conv2dAttrs>();
      need_rank(3);
      const Shape& s = *in[0];
      check_pos(a.out_channels, "out_channels");
      check_pos(a.groups, "groups");
      for (int i = 0; i < 2; ++i) {
        check_pos(a.kernel[i], "kernel");
        check_pos(a.stride[i], "stride");
        check_pos(a.dilation[i], "dilation");
        if (a.padding[i] < 0) throw fail(str_cat("padding must be >= 0, got ", a.padding[i]));
      }
      if (a.in_channels != s[0])
        throw fail(str_cat("in_channels is ", a.in_channels, " but the input has ", s[0], " channels"));
      if (a.in_channels % a.groups || a.out_channels % a.groups)
        throw fail(str_cat("groups ", a.groups, " must divide in_channels ", a.in_channels,
                       " and out_channels ", a.out_channels));
      int64_t h = conv_out(s[1], a.kernel[0], a.stride[0], a.padding[0], a.dilation[0]);
      int64_t w = conv_out(s[2], a.kernel[1], a.stride[1], a.padding[1], a.dilation[1]);
      if (h <= 0 || w <= 0)
        throw fail(str_cat("kernel larger than the padded input ", shape_str(s)));
      n.shape = {a.out_channels, h, w};
      break;
    }
    case OpKind::kLinear: {
      const auto& a = n.as<LinearAttrs>();
      if (in[0]->empty()) throw fail("input has no shape");
      check_pos(a.out_features, "out_features");
      if (a.in_features != in[0]->back())
        throw fail(str_cat("in_features is ", a.in_features, " but the input has ", in[0]->back(),
                       " features (shape ", shape_str(*in[0]), ")"));
      n.shape = *in[0];
      n.shape.back() = a.out_features;
      break;
    }
    case OpKind::kBatchNorm: {
      const auto& a = n.as<BatchNormAttrs>();
      if (in[0]->size() != 1 && in[0]->size() != 3)
        throw fail(str_cat("expects [C] or [C,H,W] input, got ", shape_str(*in[0])));
      if (a.num_features != (*in[0])[0])
        throw fail(str_cat("num_features is ", a.num_features, " but the input has ", (*in[0])[0],
                       " channels"));
      if (!(a.eps > 0)) throw fail(str_cat("eps must be > 0, got ", a.eps));
      n.shape = *in[0];
      break;
    }
    case OpKind::kReLU:
    case OpKind::kReLU6:
    case OpKind::kHardswish:
    case OpKind::kIdentity:
      n.shape = *in[0];
      break;
    case OpKind::kDropout: {
      const auto& a = n.as<DropoutAttrs>();
      if (!(a.p >= 0 && a.p < 1)) throw fail(str_cat("p must be in [0, 1), got ", a.p));
      n.shape = *in[0];
      break;
    }
    case OpKind::kMaxPool:
    case OpKind::kAvgPool: {
      const auto& a = n.as<PoolAttrs>();
      need_rank(3);
      const Shape& s = *in[0];
      for (int i = 0; i < 2; ++i) {
        check_pos(a.kernel[i], "kernel");
        check_pos(a.stride[i], "stride");
        if (a.padding[i] < 0 || a.padding[i] * 2 > a.kernel[i])
          throw fail(str_cat("padding must be in [0, kernel/2], got ", a.padding[i]));
      }
      int64_t h = conv_out(s[1], a.kernel[0], a.stride[0], a.padding[0], 1, a.ceil_mode);
      int64_t w = conv_out(s[2], a.kernel[1], a.stride[1], a.padding[1], 1, a.ceil_mode);
      if (h <= 0 || w <= 0) throw fail(str_cat("window larger than the input ", shape_str(s)));
      n.shape = {s[0], h, w};
      break;
    }
    case OpKind::kGlobalAvgPool:
      need_rank(3);
      n.shape = {(*in[0])[0], 1, 1};
      break;
    case OpKind::kFlatten: {
      const auto& a = n.as<FlattenAttrs>();
      const Shape& s = *in[0];
      int64_t sd = a.start_dim;
      if (sd < 1 || sd > static_cast<int64_t>(s.size()))
        throw fail(str_cat("start_dim must be in [1, ", s.size(), "], got ", sd));
      Shape out(s.begin(), s.begin() + (sd - 1));
      int64_t prod = 1;
      for (size_t i = sd - 1; i < s.size(); ++i) prod *= s[i];
      out.push_back(prod);
      n.shape = out;
      break;
    }
    case OpKind::kAdd: {
      for (size_t i = 1; i < in.size(); ++i)
        if (*in[i] != *in[0])
          throw fail(str_cat("input shapes differ: '", n.inputs[0], "' ", shape_str(*in[0]), " vs '",
                         n.inputs[i], "' ", shape_str(*in[i])));
      n.shape = *in[0];
      break;
    }
    case OpKind::kConcat: {
      const auto& a = n.as<ConcatAttrs>();
      int64_t d = a.dim - 1;
      if (d < 0 || d >= static_cast<int64_t>(in[0]->size()))
        throw fail(str_cat("dim must be in [1, ", in[0]->size(), "], got ", a.dim));
      Shape out = *in[0];
      for (size_t i = 1; i < in.size(); ++i) {
        const Shape& s = *in[i];
        bool ok = s.size() == out.size();
        for (size_t k = 0; ok && k < s.size(); ++k)
          if (static_cast<int64_t>(k) != d && s[k] != out[k]) ok = false;
        if (!ok)
          throw fail(str_cat("input '", n.inputs[i], "' ", shape_str(s),
                         " does not match ", shape_str(*in[0]), " outside dim ", a.dim));
        out[d] += s[d];
      }
      n.shape = out;
      break;
    }
    case OpKind::kCount:
      throw fail("invalid op");
  }
}

void Graph::infer_shapes() {
  NNOPT_CHECK(!nodes_.empty(), GraphError, "graph is empty");
  NNOPT_CHECK(nodes_[0].op == OpKind::kInput, GraphError, "first node '", nodes_[0].name,
              "' must be the input node");
  std::unordered_map<std::string, size_t> seen;
  for (size_t i = 0; i < nodes_.size(); ++i) {
    Node& n = nodes_[i];
    for (const auto& in : n.inputs)
      NNOPT_CHECK(seen.count(in), GraphError, "node '", n.name, "': input '", in,
                  contains(in) ? "' comes later in the graph (cycle or wrong order)"
                               : "' does not exist");
    NNOPT_CHECK(!(i > 0 && n.op == OpKind::kInput), GraphError, "node '", n.name,
                "': a graph has exactly one input node");
    infer_node(n);
    seen[n.name] = i;
  }
  NNOPT_CHECK(contains(output_), GraphError, "output '", output_, "' is not a node");
}

void Graph::validate() const {
  Graph copy = *this;
  copy.infer_shapes();
}

// ---------------------------------------------------------------- counting

int64_t node_params(const Node& n) {
  switch (n.op) {
    case OpKind::kConv2d: {
      const auto& a = n.as<Conv2dAttrs>();
      return a.out_channels * (a.in_channels / a.groups) * a.kernel[0] * a.kernel[1] +
             (a.bias ? a.out_channels : 0);
    }
    case OpKind::kLinear: {
      const auto& a = n.as<LinearAttrs>();
      return a.in_features * a.out_features + (a.bias ? a.out_features : 0);
    }
    case OpKind::kBatchNorm: {
      const auto& a = n.as<BatchNormAttrs>();
      return a.affine ? 2 * a.num_features : 0;
    }
    default:
      return 0;
  }
}

int64_t node_macs(const Node& n, const Graph& g) {
  switch (n.op) {
    case OpKind::kConv2d: {
      const auto& a = n.as<Conv2dAttrs>();
      int64_t out = 1;
      for (auto d : n.shape) out *= d;
      return out * (a.in_channels / a.groups) * a.kernel[0] * a.kernel[1];
    }
    case OpKind::kLinear: {
      const auto& a = n.as<LinearAttrs>();
      int64_t rows = 1;
      for (size_t i = 0; i + 1 < n.shape.size(); ++i) rows *= n.shape[i];
      return rows * a.in_features * a.out_features;
    }
    default:
      return 0;
  }
}

std::vector<LayerStats> Graph::layer_stats() const {
  std::vector<LayerStats> out;
  out.reserve(nodes_.size());
  for (const auto& n : nodes_) out.push_back({n.name, n.op, n.shape, node_params(n), node_macs(n, *this)});
  return out;
}

int64_t Graph::num_params() const {
  int64_t s = 0;
  for (const auto& n : nodes_) s += node_params(n);
  return s;
}

int64_t Graph::macs() const {
  int64_t s = 0;
  for (const auto& n : nodes_) s += node_macs(n, *this);
  return s;
}

std::string Graph::summary() const {
  std::ostringstream os;
  size_t w = 4;
  for (const auto& n : nodes_) w = std::max(w, n.name.size());
  os << std::left << std::setw(w + 2) << "name" << std::setw(17) << "op" << std::setw(16)
     << "shape" << std::right << std::setw(12) << "params" << std::setw(14) << "MACs" << "\n";
  for (const auto& s : layer_stats())
    os << std::left << std::setw(w + 2) << s.name << std::setw(17) << op_name(s.op)
       << std::setw(16) << shape_str(s.shape) << std::right << std::setw(12) << s.params
       << std::setw(14) << s.macs << "\n";
  os << "total: " << num_params() << " params, " << macs() << " MACs\n";
  return os.str();
}

bool Graph::operator==(const Graph& o) const { return to_json(-1) == o.to_json(-1); }

// ---------------------------------------------------------------- JSON

std::string Graph::to_json(int indent) const {
  json nodes = json::array();
  for (const auto& n : nodes_) {
    json j;
    j["name"] = n.name;
    j["op"] = op_name(n.op);
    j["inputs"] = n.inputs;
    json a = json::object();
    std::visit(
        [&](const auto& at) {
          using T = std::decay_t<decltype(at)>;
          if constexpr (std::is_same_v<T, InputAttrs>) {
            a["shape"] = at.shape;
          } else if constexpr (std::is_same_v<T, Conv2dAttrs>) {
            a["in_channels"] = at.in_channels;
            a["out_channels"] = at.out_channels;
            a["kernel"] = pair_json(at.kernel);
            a["stride"] = pair_json(at.stride);
            a["padding"] = pair_json(at.padding);
            a["dilation"] = pair_json(at.dilation);
            a["groups"] = at.groups;
            a["bias"] = at.bias;
          } else if constexpr (std::is_same_v<T, LinearAttrs>) {
            a["in_features"] = at.in_features;
            a["out_features"] = at.out_features;
            a["bias"] = at.bias;
          } else if constexpr (std::is_same_v<T, BatchNormAttrs>) {
            a["num_features"] = at.num_features;
            a["eps"] = at.eps;
            a["momentum"] = at.momentum;
            a["affine"] = at.affine;
          } else if constexpr (std::is_same_v<T, PoolAttrs>) {
            a["kernel"] = pair_json(at.kernel);
            a["stride"] = pair_json(at.stride);
            a["padding"] = pair_json(at.padding);
            a["ceil_mode"] = at.ceil_mode;
            a["count_include_pad"] = at.count_include_pad;
          } else if constexpr (std::is_same_v<T, FlattenAttrs>) {
            a["start_dim"] = at.start_dim;
          } else if constexpr (std::is_same_v<T, ConcatAttrs>) {
            a["dim"] = at.dim;
          } else if constexpr (std::is_same_v<T, DropoutAttrs>) {
            a["p"] = at.p;
          }
        },
        n.attrs);
    if (!a.empty()) j["attrs"] = a;
    nodes.push_back(j);
  }
  json g;
  g["format"] = "nnopt.graph";
  g["version"] = 1;
  g["output"] = output_;
  g["nodes"] = nodes;
  return g.dump(indent);
}

namespace {

// Reads attribute keys, rejecting unknown ones so that a typo is not ignored.
class AttrReader {
 public:
  AttrReader(json a, const std::string& node) : a_(std::move(a)), node_(node) {
    if (!a_.is_null() && !a_.is_object())
      throw GraphError(str_cat("node '", node_, "': attrs must be an object"));
  }
  template <typename T>
  void get(const char* key, T& out) {
    used_.push_back(key);
    if (a_.is_null() || !a_.contains(key)) return;
    try {
      out = a_.at(key).get<T>();
    } catch (const json::exception&) {
      throw GraphError(str_cat("node '", node_, "': attribute '", key, "' has the wrong type: ",
                           a_.at(key).dump()));
    }
  }
  void pair(const char* key, Pair& out) {
    used_.push_back(key);
    if (a_.is_null() || !a_.contains(key)) return;
    const json& v = a_.at(key);
    if (v.is_number_integer()) {
      out = {v.get<int64_t>(), v.get<int64_t>()};
    } else if (v.is_array() && v.size() == 2 && v[0].is_number_integer() &&
               v[1].is_number_integer()) {
      out = {v[0].get<int64_t>(), v[1].get<int64_t>()};
    } else {
      throw GraphError(str_cat("node '", node_, "': attribute '", key,
                           "' must be an integer or a pair of integers, got ", v.dump()));
    }
  }
  void finish() const {
    if (a_.is_null()) return;
    for (auto it = a_.begin(); it != a_.end(); ++it) {
      bool known = false;
      for (const char* k : used_) known = known || it.key() == k;
      if (!known) throw GraphError(str_cat("node '", node_, "': unknown attribute '", it.key(), "'"));
    }
  }

 private:
  json a_;
  std::string node_;
  std::vector<const char*> used_;
};

}  // namespace

Graph Graph::from_json(const std::string& text) {
  json g;
  try {
    g = json::parse(text);
  } catch (const json::exception& e) {
    throw GraphError(str_cat("graph JSON does not parse: ", e.what()));
  }
  NNOPT_CHECK(g.is_object() && g.value("format", "") == "nnopt.graph", GraphError,
              "graph JSON: missing \"format\": \"nnopt.graph\"");
  NNOPT_CHECK(g.value("version", 0) == 1, GraphError, "graph JSON: unsupported version ",
              g.value("version", 0));
  NNOPT_CHECK(g.contains("nodes") && g["nodes"].is_array(), GraphError,
              "graph JSON: \"nodes\" must be an array");
  Graph out;
  for (const auto& j : g["nodes"]) {
    NNOPT_CHECK(j.is_object() && j.contains("name") && j["name"].is_string() &&
                    j.contains("op") && j["op"].is_string(),
                GraphError, "graph JSON: every node needs string \"name\" and \"op\": ", j.dump());
    std::string name = j["name"];
    for (auto it = j.begin(); it != j.end(); ++it)
      NNOPT_CHECK(it.key() == "name" || it.key() == "op" || it.key() == "inputs" ||
                      it.key() == "attrs",
                  GraphError, "node '", name, "': unknown key '", it.key(), "'");
    OpKind op = op_from_name(j["op"]);
    std::vector<std::string> inputs;
    if (j.contains("inputs")) {
      NNOPT_CHECK(j["inputs"].is_array(), GraphError, "node '", name, "': inputs must be a list");
      for (const auto& i : j["inputs"]) {
        NNOPT_CHECK(i.is_string(), GraphError, "node '", name, "': input names must be strings");
        inputs.push_back(i);
      }
    }
    Attrs attrs = default_attrs(op);
    AttrReader r(j.contains("attrs") ? j["attrs"] : json(), name);
    std::visit(
        [&](auto& at) {
          using T = std::decay_t<decltype(at)>;
          if constexpr (std::is_same_v<T, InputAttrs>) {
            r.get("shape", at.shape);
          } else if constexpr (std::is_same_v<T, Conv2dAttrs>) {
            r.get("in_channels", at.in_channels);
            r.get("out_channels", at.out_channels);
            r.pair("kernel", at.kernel);
            r.pair("stride", at.stride);
            r.pair("padding", at.padding);
            r.pair("dilation", at.dilation);
            r.get("groups", at.groups);
            r.get("bias", at.bias);
          } else if constexpr (std::is_same_v<T, LinearAttrs>) {
            r.get("in_features", at.in_features);
            r.get("out_features", at.out_features);
            r.get("bias", at.bias);
          } else if constexpr (std::is_same_v<T, BatchNormAttrs>) {
            r.get("num_features", at.num_features);
            r.get("eps", at.eps);
            r.get("momentum", at.momentum);
            r.get("affine", at.affine);
          } else if constexpr (std::is_same_v<T, PoolAttrs>) {
            r.pair("kernel", at.kernel);
            r.pair("stride", at.stride);
            r.pair("padding", at.padding);
            r.get("ceil_mode", at.ceil_mode);
            r.get("count_include_pad", at.count_include_pad);
          } else if constexpr (std::is_same_v<T, FlattenAttrs>) {
            r.get("start_dim", at.start_dim);
          } else if constexpr (std::is_same_v<T, ConcatAttrs>) {
            r.get("dim", at.dim);
          } else if constexpr (std::is_same_v<T, DropoutAttrs>) {
            r.get("p", at.p);
          }
        },
        attrs);
    r.finish();
    out.add(name, op, attrs, inputs);
  }
  NNOPT_CHECK(!out.nodes_.empty(), GraphError, "graph JSON: no nodes");
  if (g.contains("output")) {
    NNOPT_CHECK(g["output"].is_string(), GraphError, "graph JSON: output must be a string");
    NNOPT_CHECK(out.contains(g["output"]), GraphError, "graph JSON: output '",
                g["output"].get<std::string>(), "' is not a node");
    out.output_ = g["output"];
  }
  out.infer_shapes();
  return out;
}

}  // namespace nnopt
