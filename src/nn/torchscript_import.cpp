// TorchScript -> nnopt::Graph + tensors. See nnopt/nn/torchscript.h for the contract.
#include <torch/csrc/jit/passes/constant_propagation.h>
#include <torch/csrc/jit/passes/dead_code_elimination.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/csrc/jit/passes/remove_mutation.h>
#include <torch/script.h>

#include <cmath>
#include <functional>
#include <map>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/nn/torchscript.h"

namespace nnopt {
namespace {
namespace jit = torch::jit;

// What the importer knows about one TorchScript value.
struct SV {
  enum Kind {
    kUnknown,   // produced by an op already reported as unsupported
    kSymbolic,  // a number that depends on the batch size in a way we do not track
    kNone,
    kInt,
    kBatch,  // the batch size N
    kDouble,
    kBool,
    kString,
    kList,    // also tuples
    kAct,     // an activation: the output of graph node `s`
    kTensor,  // a known tensor (parameter, buffer or constant); `s` is its attribute path
    kModule,  // a submodule; `s` is its path ("" = the root)
    kOther,   // anything else (device, dtype, ...)
  };
  Kind kind = kUnknown;
  int64_t i = 0;
  double d = 0;
  bool b = false;
  std::string s;
  std::vector<SV> list;
  at::Tensor t;
  bool transposed = false;  // kTensor seen through aten::t
  c10::intrusive_ptr<c10::ivalue::Object> obj;

  static SV of(Kind k) {
    SV v;
    v.kind = k;
    return v;
  }
  static SV integer(int64_t x) {
    SV v = of(kInt);
    v.i = x;
    return v;
  }
  static SV act(const std::string& node) {
    SV v = of(kAct);
    v.s = node;
    return v;
  }
};

std::string join_path(const std::string& a, const std::string& b) {
  return a.empty() ? b : b.empty() ? a : a + "." + b;
}
std::string parent_path(const std::string& p) {
  auto k = p.rfind('.');
  return k == std::string::npos ? std::string() : p.substr(0, k);
}
bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}
std::string base_name(const std::string& path) {
  auto k = path.find_last_of('/');
  return k == std::string::npos ? path : path.substr(k + 1);
}
// "aten::relu_" -> "relu"
std::string op_short(const std::string& kind) {
  auto k = kind.find("::");
  std::string s = k == std::string::npos ? kind : kind.substr(k + 2);
  while (!s.empty() && s.front() == '_') s.erase(s.begin());
  while (!s.empty() && s.back() == '_') s.pop_back();
  return s.empty() ? "op" : s;
}
// aten ops that write into their first argument: "aten::relu_", not "aten::__and__".
bool is_inplace(const std::string& kind) {
  return starts_with(kind, "aten::") && kind.size() > 7 && kind.back() == '_' &&
         kind[kind.size() - 2] != '_';
}

SV from_ivalue(const c10::IValue& iv, const std::string& path) {
  SV v;
  v.s = path;
  if (iv.isNone()) {
    v.kind = SV::kNone;
  } else if (iv.isInt()) {
    v.kind = SV::kInt;
    v.i = iv.toInt();
  } else if (iv.isDouble()) {
    v.kind = SV::kDouble;
    v.d = iv.toDouble();
  } else if (iv.isBool()) {
    v.kind = SV::kBool;
    v.b = iv.toBool();
  } else if (iv.isString()) {
    v.kind = SV::kString;
    v.s = iv.toStringRef();
  } else if (iv.isTensor()) {
    v.kind = SV::kTensor;
    v.t = iv.toTensor();
  } else if (iv.isObject() && iv.toObjectRef().type()->is_module()) {
    v.kind = SV::kModule;
    v.obj = iv.toObject();
  } else if (iv.isList() || iv.isTuple() || iv.isIntList() || iv.isDoubleList() ||
             iv.isBoolList()) {
    v.kind = SV::kList;
    std::vector<c10::IValue> elems;
    if (iv.isTuple()) {
      for (const auto& e : iv.toTupleRef().elements()) elems.push_back(e);
    } else {
      for (const auto& e : iv.toListRef()) elems.push_back(e);
    }
    for (const auto& e : elems) v.list.push_back(from_ivalue(e, ""));
  } else {
    v.kind = SV::kOther;
  }
  return v;
}

std::string sv_str(const SV& v) {
  switch (v.kind) {
    case SV::kInt:
      return std::to_string(v.i);
    case SV::kBatch:
      return "N";
    case SV::kDouble:
      return str_cat(v.d);
    case SV::kBool:
      return v.b ? "True" : "False";
    case SV::kNone:
      return "None";
    case SV::kString:
      return "'" + v.s + "'";
    case SV::kList: {
      std::string s = "[";
      for (size_t k = 0; k < v.list.size(); ++k) s += (k ? ", " : "") + sv_str(v.list[k]);
      return s + "]";
    }
    default:
      return "?";
  }
}

// Thrown inside a handler when an argument is not what the converter supports;
// turned into one entry of the unsupported-op list.
struct Unsupported {
  std::string detail;
};

class Importer {
 public:
  Importer(jit::Module root, std::string file, Shape input_shape)
      : root_(std::move(root)), file_(std::move(file)), input_shape_(std::move(input_shape)) {
    register_handlers();
  }

  ImportedModel run();

 private:
  using Handler = std::function<void(jit::Node*)>;

  // ---- graph preparation ----
  void prepare_graph();
  static void collect_scalar_attrs(jit::Block* b, std::vector<jit::Node*>& out,
                                   std::set<std::string>& assigned);

  // ---- naming ----
  std::string scope_path(jit::Node* n) const;
  std::string where(jit::Node* n) const;
  std::string unique_name(const std::string& base) const;
  std::string functional_name(jit::Node* n) const;
  std::string param_node_name(jit::Node* n, const SV& w) const;

  // ---- values ----
  const SV& in(jit::Node* n, size_t k) { return vals_[n->input(k)]; }
  void set_out(jit::Node* n, SV v, size_t k = 0) { vals_[n->output(k)] = std::move(v); }
  static int64_t as_int(const SV& v, const char* what);
  static double as_double(const SV& v, const char* what);
  static bool as_bool(const SV& v, const char* what);
  static Pair as_pair(const SV& v, const char* what, bool empty_ok = false);
  const Shape& shape_of(const SV& act) const { return graph_.node(act.s).shape; }
  const SV& need_act(jit::Node* n, size_t k);
  std::string add_node(jit::Node* n, std::string name, OpKind op, Attrs attrs,
                       std::vector<std::string> ins);
  void add_tensor(const std::string& name, const at::Tensor& t);

  // ---- converters ----
  void register_handlers();
  void convert(jit::Node* n);
  void process_block(jit::Block* block);
  void unary(jit::Node* n, OpKind op);
  void conv(jit::Node* n, const SV& x, const SV& w, const SV& b, const SV& stride, const SV& pad,
            const SV& dil, const SV& groups);
  void linear(jit::Node* n, const SV& x, const SV& w, const SV& b);
  void reshape(jit::Node* n);
  SV arith(jit::Node* n, const std::string& op);

  jit::Module root_;
  std::string file_;
  Shape input_shape_;
  std::shared_ptr<jit::Graph> g_;
  std::unordered_map<const jit::Value*, SV> vals_;
  std::unordered_map<std::string, Handler> handlers_;
  std::map<std::string, jit::Module> modules_;  // every module by path ("" = root)
  std::set<std::string> reserved_;              // module paths
  std::set<std::string> used_;                  // node names taken
  Graph graph_;
  TensorMap tensors_;
  std::vector<std::pair<std::string, std::string>> unsupported_;  // (what, where)
  std::string build_error_;
};

// ------------------------------------------------------------------ preparation

// prim::GetAttr nodes whose output is a scalar (bool, int, float, str, None),
// and the names of attributes that forward assigns (prim::SetAttr).
void Importer::collect_scalar_attrs(jit::Block* b, std::vector<jit::Node*>& out,
                                    std::set<std::string>& assigned) {
  for (jit::Node* n : b->nodes()) {
    if (n->kind() == c10::prim::SetAttr) assigned.insert(n->s(jit::attr::name));
    if (n->kind() == c10::prim::GetAttr) {
      auto k = n->output()->type()->kind();
      if (k == c10::TypeKind::BoolType || k == c10::TypeKind::IntType ||
          k == c10::TypeKind::FloatType || k == c10::TypeKind::StringType ||
          k == c10::TypeKind::NoneType)
        out.push_back(n);
    }
    for (jit::Block* sub : n->blocks()) collect_scalar_attrs(sub, out, assigned);
  }
}

void Importer::prepare_graph() {
  NNOPT_CHECK(root_.find_method("forward").has_value(), GraphError, "cannot import '", file_,
              "': the module has no forward method");
  g_ = root_.get_method("forward").graph()->copy();
  jit::Inline(*g_);
  // Eval semantics: every `self.training` (of any submodule) becomes false, and
  // other scalar attributes (`self.use_res`, `self.inplace`, ...) become the
  // constants they hold, so that constant propagation removes the branches on
  // them. Tensors and submodules stay attributes (their paths name the nodes).
  // Attributes that forward itself assigns are left alone.
  std::vector<jit::Node*> attrs;
  std::set<std::string> assigned;
  collect_scalar_attrs(g_->block(), attrs, assigned);
  std::unordered_map<const jit::Value*, c10::IValue> resolved;
  resolved[g_->inputs()[0]] = root_._ivalue();
  std::function<c10::optional<c10::IValue>(jit::Value*)> resolve =
      [&](jit::Value* v) -> c10::optional<c10::IValue> {
    auto it = resolved.find(v);
    if (it != resolved.end()) return it->second;
    jit::Node* p = v->node();
    if (p->kind() != c10::prim::GetAttr) return c10::nullopt;
    auto obj = resolve(p->input(0));
    const std::string name = p->s(jit::attr::name);
    if (!obj || !obj->isObject() || !obj->toObjectRef().type()->hasAttribute(name))
      return c10::nullopt;
    c10::IValue r = obj->toObjectRef().getAttr(name);
    resolved[v] = r;
    return r;
  };
  for (jit::Node* n : attrs) {
    c10::IValue value;
    if (n->s(jit::attr::name) == "training") {
      value = false;
    } else {
      if (assigned.count(n->s(jit::attr::name))) continue;
      auto r = resolve(n->output());
      if (!r || !(r->isBool() || r->isInt() || r->isDouble() || r->isNone() || r->isString()))
        continue;
      value = *r;
    }
    jit::WithInsertPoint guard(n);
    jit::Value* c = g_->insertConstant(value);
    n->output()->replaceAllUsesWith(c);
    n->destroy();
  }
  jit::ConstantPropagation(g_);
  try {
    jit::RemoveListMutation(g_);
    jit::RemoveTensorMutation(g_);
  } catch (const c10::Error&) {
    // Best effort: in-place ops that remain are handled as aliasing updates.
  }
  jit::EliminateDeadCode(g_);
}

// ------------------------------------------------------------------ naming

// The module path of the innermost module whose forward produced `n`. The
// inliner records only the attribute name of each call ("conv1"), so each step
// is resolved below the previous one: a direct child first, else the unique
// descendant with that name and the recorded class type.
std::string Importer::scope_path(jit::Node* n) const {
  std::string cur;
  auto cs = n->callstack();
  if (!cs) return cur;
  for (const auto& entry : (*cs)->vec()) {
    const auto& mi = std::get<2>(entry);
    if (!mi) continue;
    const std::string name = mi->instance_name();
    if (name == "SELF" || name == "INSTANCE_NAME_UNKNOWN") continue;
    const c10::ClassType* type = mi->class_type().get();
    std::string direct = join_path(cur, name);
    auto it = modules_.find(direct);
    if (it != modules_.end() && (!type || it->second.type().get() == type)) {
      cur = direct;
      continue;
    }
    std::string found;
    int matches = 0;
    for (const auto& [p, m] : modules_) {
      if (p == direct || !(cur.empty() || starts_with(p, cur + "."))) continue;
      bool name_ok =
          p == name || (p.size() > name.size() &&
                        p.compare(p.size() - name.size() - 1, std::string::npos, "." + name) == 0);
      if (name_ok && type && m.type().get() == type) {
        found = p;
        ++matches;
      }
    }
    if (matches == 1)
      cur = found;
    else if (it != modules_.end())
      cur = direct;
  }
  return cur;
}

std::string Importer::where(jit::Node* n) const {
  std::string p = scope_path(n);
  std::string s = p.empty() ? "in forward" : "in '" + p + "'";
  const jit::SourceRange& sr = n->sourceRange();
  auto orig = sr.findSourceRangeThatGenerated();
  auto flc = (orig ? *orig : sr).file_line_col();
  if (flc && !std::get<0>(*flc).empty())
    s += str_cat(" (", base_name(std::get<0>(*flc)), ":", std::get<1>(*flc), ")");
  return s;
}

std::string Importer::unique_name(const std::string& base) const {
  if (!used_.count(base) && !reserved_.count(base)) return base;
  for (int k = 1;; ++k) {
    std::string c = str_cat(base, "_", k);
    if (!used_.count(c) && !reserved_.count(c)) return c;
  }
}

// A node without parameters is named after the leaf module that ran it
// ("layer1.0.relu"); inline ops in a container get "<path>.<op>".
std::string Importer::functional_name(jit::Node* n) const {
  const std::string op = op_short(n->kind().toQualString());
  const std::string path = scope_path(n);
  if (path.empty()) return unique_name(op);
  auto it = modules_.find(path);
  bool own = false;
  if (it != modules_.end()) {
    const jit::Module& m = it->second;
    const auto& qn = m.type()->name();
    if (qn && starts_with(qn->name(), "NnoptNode")) {
      own = true;  // written by export_torchscript: one module per node
    } else {
      own = m.children().size() == 0 && m.named_parameters(false).size() == 0 &&
            m.named_buffers(false).size() == 0;
    }
  }
  if (own) return used_.count(path) ? unique_name(path) : path;
  return unique_name(path + "." + op);
}

// conv2d/linear/batch_norm: the module path of the weight ("layer1.0.conv1").
std::string Importer::param_node_name(jit::Node* n, const SV& w) const {
  std::string path = w.kind == SV::kTensor ? parent_path(w.s) : std::string();
  if (path.empty()) return unique_name(op_short(n->kind().toQualString()));
  if (used_.count(path))
    throw Unsupported{
        str_cat("module '", path, "' is called more than once (shared weights are not supported)")};
  return path;
}

// ------------------------------------------------------------------ values

int64_t Importer::as_int(const SV& v, const char* what) {
  if (v.kind == SV::kInt) return v.i;
  if (v.kind == SV::kBool) return v.b ? 1 : 0;
  throw Unsupported{str_cat(what, " is not a constant integer (", sv_str(v), ")")};
}
double Importer::as_double(const SV& v, const char* what) {
  if (v.kind == SV::kDouble) return v.d;
  if (v.kind == SV::kInt) return static_cast<double>(v.i);
  throw Unsupported{str_cat(what, " is not a constant number (", sv_str(v), ")")};
}
bool Importer::as_bool(const SV& v, const char* what) {
  if (v.kind == SV::kBool) return v.b;
  if (v.kind == SV::kInt) return v.i != 0;
  throw Unsupported{str_cat(what, " is not a constant bool (", sv_str(v), ")")};
}
Pair Importer::as_pair(const SV& v, const char* what, bool empty_ok) {
  if (v.kind == SV::kInt) return {v.i, v.i};
  if (v.kind == SV::kList) {
    if (v.list.empty() && empty_ok) return {0, 0};
    if (v.list.size() == 1) {
      int64_t a = as_int(v.list[0], what);
      return {a, a};
    }
    if (v.list.size() == 2) return {as_int(v.list[0], what), as_int(v.list[1], what)};
  }
  throw Unsupported{str_cat(what, " must be one or two constant integers, got ", sv_str(v))};
}

const SV& Importer::need_act(jit::Node* n, size_t k) {
  const SV& v = in(n, k);
  if (v.kind != SV::kAct)
    throw Unsupported{str_cat("argument ", k, " is not a tensor computed from the input")};
  return v;
}

std::string Importer::add_node(jit::Node* n, std::string name, OpKind op, Attrs attrs,
                               std::vector<std::string> ins) {
  try {
    graph_.add(name, op, std::move(attrs), std::move(ins));
  } catch (const GraphError& e) {
    if (build_error_.empty())
      build_error_ = str_cat(n->kind().toQualString(), " ", where(n), ": ", e.what());
    throw Unsupported{""};  // silently unknown from here on
  }
  used_.insert(name);
  return name;
}

void Importer::add_tensor(const std::string& name, const at::Tensor& t) {
  at::Tensor c = t.detach();
  if (c.is_floating_point()) c = c.to(at::kFloat);
  tensors_[name] = c.clone().contiguous();
}

// ------------------------------------------------------------------ converters

void Importer::unary(jit::Node* n, OpKind op) {
  const SV& x = need_act(n, 0);
  set_out(n, SV::act(add_node(n, functional_name(n), op, default_attrs(op), {x.s})));
}

void Importer::conv(jit::Node* n, const SV& x, const SV& w, const SV& b, const SV& stride,
                    const SV& pad, const SV& dil, const SV& groups) {
  if (x.kind != SV::kAct) throw Unsupported{"the input is not a tensor computed from the input"};
  if (w.kind != SV::kTensor || w.transposed || w.t.dim() != 4)
    throw Unsupported{"the weight is not a 4-d parameter or constant"};
  if (b.kind != SV::kNone && (b.kind != SV::kTensor || b.t.dim() != 1))
    throw Unsupported{"the bias is not a 1-d parameter or constant"};
  Conv2dAttrs a;
  a.groups = as_int(groups, "groups");
  a.out_channels = w.t.size(0);
  a.in_channels = w.t.size(1) * a.groups;
  a.kernel = {w.t.size(2), w.t.size(3)};
  a.stride = as_pair(stride, "stride");
  a.dilation = as_pair(dil, "dilation");
  if (pad.kind == SV::kString) {
    if (pad.s == "valid") {
      a.padding = {0, 0};
    } else if (pad.s == "same") {
      for (int k = 0; k < 2; ++k) {
        int64_t total = a.dilation[k] * (a.kernel[k] - 1);
        if (a.stride[k] != 1 || total % 2)
          throw Unsupported{"padding='same' needs stride 1 and an odd effective kernel"};
        a.padding[k] = total / 2;
      }
    } else {
      throw Unsupported{str_cat("padding '", pad.s, "'")};
    }
  } else {
    a.padding = as_pair(pad, "padding");
  }
  a.bias = b.kind == SV::kTensor;
  std::string name = param_node_name(n, w);
  add_node(n, name, OpKind::kConv2d, a, {x.s});
  add_tensor(name + ".weight", w.t);
  if (a.bias) add_tensor(name + ".bias", b.t);
  set_out(n, SV::act(name));
}

void Importer::linear(jit::Node* n, const SV& x, const SV& w, const SV& b) {
  if (x.kind != SV::kAct) throw Unsupported{"the input is not a tensor computed from the input"};
  if (w.kind != SV::kTensor || w.transposed || w.t.dim() != 2)
    throw Unsupported{"the weight is not a 2-d parameter or constant"};
  if (b.kind != SV::kNone && (b.kind != SV::kTensor || b.t.dim() != 1))
    throw Unsupported{"the bias is not a 1-d parameter or constant"};
  LinearAttrs a;
  a.out_features = w.t.size(0);
  a.in_features = w.t.size(1);
  a.bias = b.kind == SV::kTensor;
  std::string name = param_node_name(n, w);
  add_node(n, name, OpKind::kLinear, a, {x.s});
  add_tensor(name + ".weight", w.t);
  if (a.bias) add_tensor(name + ".bias", b.t);
  set_out(n, SV::act(name));
}

// aten::view / aten::reshape: only [N, -1] / [N, prod] (a flatten) or a no-op.
void Importer::reshape(jit::Node* n) {
  const SV& x = need_act(n, 0);
  const SV& target = in(n, 1);
  if (target.kind != SV::kList) throw Unsupported{"the target shape is not a list"};
  const Shape& s = shape_of(x);
  int64_t numel = 1;
  for (auto d : s) numel *= d;
  const auto& t = target.list;
  if (t.empty()) throw Unsupported{"empty target shape"};
  Shape per;  // per-sample target, -1 allowed once
  for (size_t k = 1; k < t.size(); ++k) {
    if (t[k].kind != SV::kInt)
      throw Unsupported{str_cat("target shape ", sv_str(target), " is not constant per sample")};
    per.push_back(t[k].i);
  }
  int64_t known = 1, minus = 0;
  for (auto d : per) {
    if (d == -1)
      ++minus;
    else
      known *= d;
  }
  bool ok = minus <= 1 && known > 0;
  if (ok && t[0].kind == SV::kBatch) {
    if (minus == 1) {
      ok = numel % known == 0;
      for (auto& d : per)
        if (d == -1) d = numel / known;
    } else {
      ok = known == numel;
    }
  } else if (ok && t[0].kind == SV::kInt && t[0].i == -1) {
    ok = minus == 0 && known == numel;
  } else {
    ok = false;
  }
  if (!ok)
    throw Unsupported{str_cat("target shape ", sv_str(target), " for per-sample shape ",
                              c10::IntArrayRef(s), " does not keep the batch dimension")};
  if (per == s) {  // no-op
    set_out(n, x);
    return;
  }
  if (per.size() != 1)
    throw Unsupported{str_cat("reshape of per-sample shape ", c10::IntArrayRef(s), " to ",
                              sv_str(target), " (only flattening to [N, -1] is supported)")};
  FlattenAttrs a;
  a.start_dim = 1;
  set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kFlatten, a, {x.s})));
}

// Integer arithmetic in shape glue.
SV Importer::arith(jit::Node* n, const std::string& op) {
  const SV& a = in(n, 0);
  const SV& b = in(n, 1);
  auto is_num = [](const SV& v) {
    return v.kind == SV::kInt || v.kind == SV::kDouble || v.kind == SV::kBool;
  };
  if (!is_num(a) || !is_num(b)) return SV::of(SV::kSymbolic);
  if (a.kind == SV::kDouble || b.kind == SV::kDouble || op == "div") {
    double x = as_double(a, "operand"), y = as_double(b, "operand"), r = 0;
    if (op == "add")
      r = x + y;
    else if (op == "sub")
      r = x - y;
    else if (op == "mul")
      r = x * y;
    else if (op == "div")
      r = x / y;
    else if (op == "floordiv")
      r = std::floor(x / y);
    SV v = SV::of(SV::kDouble);
    v.d = r;
    return v;
  }
  int64_t x = a.i, y = b.i, r = 0;
  if (op == "add")
    r = x + y;
  else if (op == "sub")
    r = x - y;
  else if (op == "mul")
    r = x * y;
  else if (op == "floordiv") {
    if (y == 0) return SV::of(SV::kSymbolic);
    r = x / y;
    if ((x % y != 0) && ((x < 0) != (y < 0))) --r;
  }
  return SV::integer(r);
}

void Importer::register_handlers() {
  auto& h = handlers_;
  auto pass_through = [this](jit::Node* n) { set_out(n, in(n, 0)); };

  // ---- glue ----
  h["prim::Constant"] = [this](jit::Node* n) {
    auto iv = jit::toIValue(n->output());
    set_out(n, iv ? from_ivalue(*iv, "") : SV::of(SV::kOther));
  };
  h["prim::GetAttr"] = [this](jit::Node* n) {
    const SV& m = in(n, 0);
    const std::string name = n->s(jit::attr::name);
    if (m.kind != SV::kModule || !m.obj->type()->hasAttribute(name))
      throw Unsupported{str_cat("attribute '", name, "' cannot be resolved")};
    set_out(n, from_ivalue(m.obj->getAttr(name), join_path(m.s, name)));
  };
  auto make_list = [this](jit::Node* n) {
    SV v = SV::of(SV::kList);
    for (size_t k = 0; k < n->inputs().size(); ++k) v.list.push_back(in(n, k));
    set_out(n, v);
  };
  h["prim::ListConstruct"] = make_list;
  h["prim::TupleConstruct"] = make_list;
  auto unpack = [this](jit::Node* n) {
    const SV& l = in(n, 0);
    if (l.kind != SV::kList || l.list.size() != n->outputs().size())
      throw Unsupported{"cannot unpack a value that is not a known list"};
    for (size_t k = 0; k < l.list.size(); ++k) set_out(n, l.list[k], k);
  };
  h["prim::ListUnpack"] = unpack;
  h["prim::TupleUnpack"] = unpack;
  auto index = [this](jit::Node* n) {
    const SV& l = in(n, 0);
    if (l.kind != SV::kList) throw Unsupported{"indexing a value that is not a known list"};
    int64_t k = as_int(in(n, 1), "index");
    int64_t sz = static_cast<int64_t>(l.list.size());
    if (k < 0) k += sz;
    if (k < 0 || k >= sz) throw Unsupported{str_cat("index ", k, " out of range")};
    set_out(n, l.list[k]);
  };
  h["aten::__getitem__"] = index;
  h["prim::TupleIndex"] = index;
  h["aten::size"] = [this](jit::Node* n) {
    const SV& x = need_act(n, 0);
    const Shape& s = shape_of(x);
    SV full = SV::of(SV::kList);
    full.list.push_back(SV::of(SV::kBatch));
    for (auto d : s) full.list.push_back(SV::integer(d));
    if (n->inputs().size() == 1) {
      set_out(n, full);
      return;
    }
    int64_t d = as_int(in(n, 1), "dim");
    int64_t r = static_cast<int64_t>(full.list.size());
    if (d < 0) d += r;
    if (d < 0 || d >= r) throw Unsupported{str_cat("dim ", d, " out of range")};
    set_out(n, full.list[d]);
  };
  h["aten::dim"] = [this](jit::Node* n) {
    set_out(n, SV::integer(static_cast<int64_t>(shape_of(need_act(n, 0)).size()) + 1));
  };
  h["aten::len"] = [this](jit::Node* n) {
    const SV& l = in(n, 0);
    if (l.kind == SV::kList)
      set_out(n, SV::integer(static_cast<int64_t>(l.list.size())));
    else if (l.kind == SV::kAct)
      set_out(n, SV::of(SV::kBatch));
    else
      throw Unsupported{"len of an unknown value"};
  };
  for (const char* k : {"prim::NumToTensor", "aten::Int", "aten::IntImplicit",
                        "aten::ScalarImplicit", "aten::Float", "aten::FloatImplicit",
                        "aten::contiguous", "aten::clone", "aten::detach", "aten::detach_"})
    h[k] = pass_through;
  h["aten::t"] = [this](jit::Node* n) {
    SV v = in(n, 0);
    if (v.kind != SV::kTensor || v.t.dim() != 2)
      throw Unsupported{"transpose of a tensor computed from the input"};
    v.transposed = !v.transposed;
    set_out(n, v);
  };
  for (const char* k : {"sub", "mul", "floordiv", "div"})
    h[std::string("aten::") + k] = [this, k](jit::Node* n) {
      if (in(n, 0).kind == SV::kAct || in(n, 1).kind == SV::kAct)
        throw Unsupported{"on activations"};
      set_out(n, arith(n, k));
    };

  // An if on a condition known at import time (after constant propagation,
  // e.g. `if x.dim() == 4`): convert the branch taken.
  h["prim::If"] = [this](jit::Node* n) {
    const SV& c = in(n, 0);
    if (c.kind != SV::kBool) throw Unsupported{"control flow that depends on the input values"};
    jit::Block* taken = n->blocks()[c.b ? 0 : 1];
    process_block(taken);
    for (size_t k = 0; k < n->outputs().size(); ++k) {
      const SV& v = vals_[taken->outputs()[k]];
      if (v.kind == SV::kUnknown) throw Unsupported{""};
      set_out(n, v, k);
    }
  };

  for (const char* k : {"eq", "ne", "lt", "le", "gt", "ge"})
    h[std::string("aten::") + k] = [this, k](jit::Node* n) {
      const SV& a = in(n, 0);
      const SV& b = in(n, 1);
      if (a.kind == SV::kAct || b.kind == SV::kAct) throw Unsupported{"on activations"};
      auto num = [](const SV& v) {
        return v.kind == SV::kInt || v.kind == SV::kDouble || v.kind == SV::kBool;
      };
      SV r = SV::of(SV::kBool);
      const std::string op = k;
      if (num(a) && num(b)) {
        double x = as_double(a, "operand"), y = as_double(b, "operand");
        r.b = op == "eq"   ? x == y
              : op == "ne" ? x != y
              : op == "lt" ? x < y
              : op == "le" ? x <= y
              : op == "gt" ? x > y
                           : x >= y;
      } else if (a.kind == SV::kString && b.kind == SV::kString && (op == "eq" || op == "ne")) {
        r.b = (a.s == b.s) == (op == "eq");
      } else {
        r = SV::of(SV::kSymbolic);
      }
      set_out(n, r);
    };
  h["aten::__not__"] = [this](jit::Node* n) {
    const SV& a = in(n, 0);
    SV r = SV::of(SV::kBool);
    if (a.kind == SV::kBool)
      r.b = !a.b;
    else
      r = SV::of(SV::kSymbolic);
    set_out(n, r);
  };
  for (const char* k : {"aten::__and__", "aten::__or__"})
    h[k] = [this, k](jit::Node* n) {
      const SV& a = in(n, 0);
      const SV& b = in(n, 1);
      if (a.kind == SV::kAct || b.kind == SV::kAct) throw Unsupported{"on activations"};
      SV r = SV::of(SV::kBool);
      if (a.kind == SV::kBool && b.kind == SV::kBool)
        r.b = std::string(k) == "aten::__and__" ? (a.b && b.b) : (a.b || b.b);
      else
        r = SV::of(SV::kSymbolic);
      set_out(n, r);
    };
  for (const char* k : {"aten::__is__", "aten::__isnot__"})
    h[k] = [this, k](jit::Node* n) {
      const SV& a = in(n, 0);
      const SV& b = in(n, 1);
      SV r = SV::of(SV::kBool);
      if (a.kind == SV::kNone || b.kind == SV::kNone)
        r.b = (a.kind == b.kind) == (std::string(k) == "aten::__is__");
      else
        r = SV::of(SV::kSymbolic);
      set_out(n, r);
    };

  // ---- layers ----
  h["aten::conv2d"] = [this](jit::Node* n) {
    conv(n, in(n, 0), in(n, 1), in(n, 2), in(n, 3), in(n, 4), in(n, 5), in(n, 6));
  };
  h["aten::_convolution"] = [this](jit::Node* n) {
    if (as_bool(in(n, 6), "transposed")) throw Unsupported{"transposed convolution"};
    conv(n, in(n, 0), in(n, 1), in(n, 2), in(n, 3), in(n, 4), in(n, 5), in(n, 8));
  };
  h["aten::_convolution_mode"] = [this](jit::Node* n) {  // traced padding='same'/'valid'
    conv(n, in(n, 0), in(n, 1), in(n, 2), in(n, 3), in(n, 4), in(n, 5), in(n, 6));
  };
  h["aten::linear"] = [this](jit::Node* n) { linear(n, in(n, 0), in(n, 1), in(n, 2)); };
  h["aten::addmm"] = [this](jit::Node* n) {  // bias + x @ W.t() (old traces)
    const SV& w = in(n, 2);
    if (w.kind != SV::kTensor || !w.transposed)
      throw Unsupported{"only bias + x @ weight.t() is supported"};
    for (size_t k = 3; k < n->inputs().size(); ++k)
      if (as_double(in(n, k), "beta/alpha") != 1.0) throw Unsupported{"beta/alpha != 1"};
    SV wt = w;
    wt.transposed = false;
    linear(n, in(n, 1), wt, in(n, 0));
  };
  h["aten::matmul"] = [this](jit::Node* n) {  // x @ W.t(); a following add brings the bias
    const SV& w = in(n, 1);
    if (w.kind != SV::kTensor || !w.transposed)
      throw Unsupported{"only x @ weight.t() is supported"};
    SV wt = w;
    wt.transposed = false;
    linear(n, in(n, 0), wt, SV::of(SV::kNone));
  };
  h["aten::batch_norm"] = [this](jit::Node* n) {
    const SV& x = need_act(n, 0);
    const SV& w = in(n, 1);
    const SV& b = in(n, 2);
    const SV& rm = in(n, 3);
    const SV& rv = in(n, 4);
    if (rm.kind != SV::kTensor || rv.kind != SV::kTensor)
      throw Unsupported{"batch norm without running statistics"};
    BatchNormAttrs a;
    a.num_features = rm.t.numel();
    a.affine = w.kind == SV::kTensor;
    if (a.affine && b.kind != SV::kTensor) throw Unsupported{"weight without bias"};
    a.momentum = in(n, 6).kind == SV::kNone ? 0.1 : as_double(in(n, 6), "momentum");
    a.eps = as_double(in(n, 7), "eps");
    std::string name = param_node_name(n, rm);
    add_node(n, name, OpKind::kBatchNorm, a, {x.s});
    if (a.affine) {
      add_tensor(name + ".weight", w.t);
      add_tensor(name + ".bias", b.t);
    }
    add_tensor(name + ".running_mean", rm.t);
    add_tensor(name + ".running_var", rv.t);
    at::Tensor nbt = torch::zeros({}, torch::kLong);
    auto mod = modules_.find(parent_path(rm.s));
    if (!rm.s.empty() && mod != modules_.end() && mod->second.hasattr("num_batches_tracked")) {
      auto iv = mod->second.attr("num_batches_tracked");
      if (iv.isTensor()) nbt = iv.toTensor();
    }
    add_tensor(name + ".num_batches_tracked", nbt);
    set_out(n, SV::act(name));
  };

  // ---- activations ----
  for (const char* k : {"aten::relu", "aten::relu_"})
    h[k] = [this](jit::Node* n) { unary(n, OpKind::kReLU); };
  for (const char* k : {"aten::relu6", "aten::relu6_"})
    h[k] = [this](jit::Node* n) { unary(n, OpKind::kReLU6); };
  for (const char* k : {"aten::hardswish", "aten::hardswish_"})
    h[k] = [this](jit::Node* n) { unary(n, OpKind::kHardswish); };
  for (const char* k : {"aten::hardtanh", "aten::hardtanh_"})
    h[k] = [this](jit::Node* n) {
      double lo = as_double(in(n, 1), "min_val"), hi = as_double(in(n, 2), "max_val");
      if (lo != 0.0 || hi != 6.0)
        throw Unsupported{str_cat("min_val=", lo, ", max_val=", hi, " (only 0, 6 = relu6)")};
      unary(n, OpKind::kReLU6);
    };
  for (const char* k : {"aten::clamp", "aten::clamp_"})
    h[k] = [this](jit::Node* n) {
      const SV& lo = in(n, 1);
      const SV& hi = in(n, 2);
      double l = lo.kind == SV::kNone ? -1 : as_double(lo, "min");
      if (lo.kind != SV::kNone && l == 0.0 && hi.kind == SV::kNone) return unary(n, OpKind::kReLU);
      if (lo.kind != SV::kNone && l == 0.0 && hi.kind != SV::kNone && as_double(hi, "max") == 6.0)
        return unary(n, OpKind::kReLU6);
      throw Unsupported{str_cat("min=", sv_str(lo), ", max=", sv_str(hi),
                                " (only (0, None) = relu and (0, 6) = relu6)")};
    };

  // ---- pooling ----
  for (const char* k : {"aten::max_pool2d"})
    h[k] = [this](jit::Node* n) {
      const SV& x = need_act(n, 0);
      PoolAttrs a;
      a.kernel = as_pair(in(n, 1), "kernel_size");
      a.stride = as_pair(in(n, 2), "stride", true);
      if (a.stride[0] == 0) a.stride = a.kernel;
      a.padding = as_pair(in(n, 3), "padding");
      Pair dil = as_pair(in(n, 4), "dilation");
      if (dil[0] != 1 || dil[1] != 1) throw Unsupported{"dilation != 1"};
      a.ceil_mode = as_bool(in(n, 5), "ceil_mode");
      set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kMaxPool, a, {x.s})));
    };
  h["aten::avg_pool2d"] = [this](jit::Node* n) {
    const SV& x = need_act(n, 0);
    PoolAttrs a;
    a.kernel = as_pair(in(n, 1), "kernel_size");
    a.stride = as_pair(in(n, 2), "stride", true);
    if (a.stride[0] == 0) a.stride = a.kernel;
    a.padding = as_pair(in(n, 3), "padding");
    a.ceil_mode = as_bool(in(n, 4), "ceil_mode");
    a.count_include_pad = as_bool(in(n, 5), "count_include_pad");
    if (n->inputs().size() > 6 && in(n, 6).kind != SV::kNone) throw Unsupported{"divisor_override"};
    set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kAvgPool, a, {x.s})));
  };
  h["aten::adaptive_avg_pool2d"] = [this](jit::Node* n) {
    const SV& x = need_act(n, 0);
    Pair size = as_pair(in(n, 1), "output_size");
    if (size[0] != 1 || size[1] != 1)
      throw Unsupported{str_cat("output size ", sv_str(in(n, 1)), " (only 1x1 is supported)")};
    set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kGlobalAvgPool, NoAttrs{}, {x.s})));
  };
  h["aten::mean"] = [this](jit::Node* n) {  // x.mean([2, 3], keepdim)
    const SV& x = need_act(n, 0);
    if (n->inputs().size() < 3 || shape_of(x).size() != 3)
      throw Unsupported{"only the mean over H and W of an [N, C, H, W] tensor is supported"};
    const SV& dims = in(n, 1);
    std::set<int64_t> ds;
    if (dims.kind == SV::kList)
      for (const auto& d : dims.list) ds.insert((as_int(d, "dim") + 4) % 4);
    if (ds != std::set<int64_t>{2, 3})
      throw Unsupported{str_cat("dims ", sv_str(dims), " (only [2, 3] is supported)")};
    if (n->inputs().size() > 3 && in(n, 3).kind != SV::kNone) throw Unsupported{"dtype"};
    std::string gap = add_node(n, functional_name(n), OpKind::kGlobalAvgPool, NoAttrs{}, {x.s});
    if (as_bool(in(n, 2), "keepdim")) {
      set_out(n, SV::act(gap));
      return;
    }
    FlattenAttrs fa;
    fa.start_dim = 1;
    set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kFlatten, fa, {gap})));
  };

  // ---- shapes ----
  h["aten::flatten"] = [this](jit::Node* n) {
    const SV& x = need_act(n, 0);
    int64_t r = static_cast<int64_t>(shape_of(x).size()) + 1;
    int64_t s = as_int(in(n, 1), "start_dim"), e = as_int(in(n, 2), "end_dim");
    if (s < 0) s += r;
    if (e < 0) e += r;
    if (e != r - 1) throw Unsupported{str_cat("end_dim ", e, " (only the last dim is supported)")};
    if (s < 1) throw Unsupported{"flattening the batch dimension"};
    FlattenAttrs a;
    a.start_dim = s;
    set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kFlatten, a, {x.s})));
  };
  h["aten::view"] = [this](jit::Node* n) { reshape(n); };
  h["aten::reshape"] = [this](jit::Node* n) { reshape(n); };

  // ---- merges ----
  for (const char* k : {"aten::add", "aten::add_"})
    h[k] = [this](jit::Node* n) {
      const SV& a = in(n, 0);
      const SV& b = in(n, 1);
      if (a.kind != SV::kAct && b.kind != SV::kAct) {
        set_out(n, arith(n, "add"));
        return;
      }
      if (n->inputs().size() > 2 && as_double(in(n, 2), "alpha") != 1.0)
        throw Unsupported{"alpha != 1"};
      if (a.kind == SV::kAct && b.kind == SV::kAct) {
        set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kAdd, NoAttrs{}, {a.s, b.s})));
        return;
      }
      // linear without bias (x @ W.t()) + bias: fold the bias into the linear.
      const SV& act = a.kind == SV::kAct ? a : b;
      const SV& c = a.kind == SV::kAct ? b : a;
      jit::Value* act_value = n->input(a.kind == SV::kAct ? 0 : 1);
      if (c.kind == SV::kTensor && c.t.dim() == 1 && act_value->uses().size() == 1) {
        Node& lin = graph_.mutable_node(act.s);
        if (lin.op == OpKind::kLinear && !lin.as<LinearAttrs>().bias &&
            c.t.size(0) == lin.as<LinearAttrs>().out_features) {
          lin.as<LinearAttrs>().bias = true;
          add_tensor(act.s + ".bias", c.t);
          set_out(n, act);
          return;
        }
      }
      throw Unsupported{"only tensor + tensor (and a linear's bias) is supported"};
    };
  h["aten::cat"] = [this](jit::Node* n) {
    const SV& l = in(n, 0);
    if (l.kind != SV::kList || l.list.empty()) throw Unsupported{"the inputs are not a list"};
    std::vector<std::string> ins;
    for (const auto& v : l.list) {
      if (v.kind != SV::kAct) throw Unsupported{"an input is not computed from the model input"};
      ins.push_back(v.s);
    }
    int64_t r = static_cast<int64_t>(shape_of(l.list[0]).size()) + 1;
    int64_t d = as_int(in(n, 1), "dim");
    if (d < 0) d += r;
    if (d < 1) throw Unsupported{"concatenation along the batch dimension"};
    ConcatAttrs a;
    a.dim = d;
    set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kConcat, a, std::move(ins))));
  };

  // ---- dropout (identity in eval) ----
  for (const char* k : {"aten::dropout", "aten::dropout_", "aten::feature_dropout",
                        "aten::feature_dropout_", "aten::alpha_dropout", "aten::alpha_dropout_",
                        "aten::feature_alpha_dropout", "aten::feature_alpha_dropout_"})
    h[k] = [this](jit::Node* n) {
      const SV& x = need_act(n, 0);
      DropoutAttrs a;
      a.p = as_double(in(n, 1), "p");
      set_out(n, SV::act(add_node(n, functional_name(n), OpKind::kDropout, a, {x.s})));
    };
}

// Number ops that PyTorch also has for tensors (tensor forms are unsupported).
const std::set<std::string> kArith = {"aten::sub", "aten::mul", "aten::div",     "aten::floordiv",
                                      "aten::eq",  "aten::ne",  "aten::lt",      "aten::le",
                                      "aten::gt",  "aten::ge",  "aten::__and__", "aten::__or__"};

void Importer::convert(jit::Node* n) {
  const std::string kind = n->kind().toQualString();
  for (jit::Value* o : n->outputs()) vals_[o] = SV::of(SV::kUnknown);
  auto it = handlers_.find(kind);
  if (it == handlers_.end()) {
    std::string what = kind;
    if (kind == "prim::Loop") what += " (loops are not supported)";
    unsupported_.emplace_back(what, where(n));
    return;
  }
  for (jit::Value* v : n->inputs()) {
    if (vals_[v].kind != SV::kUnknown) continue;
    // Already reported upstream. Arithmetic on an unknown tensor is most likely
    // arithmetic on activations, which is unsupported in its own right.
    if (kArith.count(kind) && n->outputs().size() == 1 &&
        n->output()->type()->kind() == c10::TypeKind::TensorType)
      unsupported_.emplace_back(kind, where(n));
    return;
  }
  try {
    it->second(n);
  } catch (const Unsupported& u) {
    for (jit::Value* o : n->outputs()) vals_[o] = SV::of(SV::kUnknown);
    if (!u.detail.empty()) unsupported_.emplace_back(kind + " (" + u.detail + ")", where(n));
    return;
  }
  // An in-place op also updates the value it wrote into.
  if (is_inplace(kind) && !n->inputs().empty() && n->outputs().size() == 1)
    vals_[n->input(0)] = vals_[n->output()];
}

// Converts the nodes of `block` that contribute to its outputs, in order.
// Checks that only raise (prim::If on the input rank, ...) and other side
// effects are left out; an in-place op counts if the value it writes is read
// later.
void Importer::process_block(jit::Block* block) {
  std::vector<jit::Node*> order(block->nodes().begin(), block->nodes().end());
  std::unordered_set<const jit::Node*> needed;
  // The node of `block` that contains `u`, or nullptr if `u` is outside it.
  auto top = [&](jit::Node* u) -> jit::Node* {
    while (u && u->owningBlock() != block) {
      jit::Block* b = u->owningBlock();
      u = b ? b->owningNode() : nullptr;
    }
    return u;
  };
  auto read_after = [&](jit::Value* v, jit::Node* after) {
    for (const auto& use : v->uses()) {
      jit::Node* u = top(use.user);
      if (!u || u == block->return_node()) return true;
      if (needed.count(u) && (!after || u->isAfter(after))) return true;
    }
    return false;
  };
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    jit::Node* n = *it;
    bool need = false;
    for (jit::Value* o : n->outputs()) need = need || read_after(o, nullptr);
    if (!need && is_inplace(n->kind().toQualString()) && !n->inputs().empty())
      need = read_after(n->input(0), n);
    if (need) needed.insert(n);
  }
  for (jit::Node* n : order)
    if (needed.count(n)) convert(n);
}

ImportedModel Importer::run() {
  prepare_graph();
  for (const auto& nm : root_.named_modules()) {
    modules_.emplace(nm.name, nm.value);
    if (!nm.name.empty()) reserved_.insert(nm.name);
  }

  const auto& inputs = g_->inputs();
  NNOPT_CHECK(inputs.size() == 2, GraphError, "cannot import '", file_,
              "': forward must take exactly one tensor, it takes ", inputs.size() - 1,
              " arguments");
  NNOPT_CHECK(g_->outputs().size() == 1, GraphError, "cannot import '", file_,
              "': forward must return one tensor");
  SV self = SV::of(SV::kModule);
  self.obj = root_._ivalue();
  vals_[inputs[0]] = self;
  std::string in_name = inputs[1]->debugNameBase();
  if (in_name.empty()) in_name = "input";
  in_name = unique_name(in_name);
  try {
    graph_.input(in_name, input_shape_);
  } catch (const GraphError& e) {
    throw GraphError(str_cat("cannot import '", file_, "': ", e.what()));
  }
  used_.insert(in_name);
  vals_[inputs[1]] = SV::act(in_name);

  process_block(g_->block());

  jit::Value* ret = g_->outputs()[0];
  NNOPT_CHECK(ret->type()->kind() == c10::TypeKind::TensorType, GraphError, "cannot import '",
              file_, "': forward must return one tensor, it returns ", ret->type()->repr_str());
  const SV& out = vals_[ret];
  if (!unsupported_.empty()) {
    // One line: each op kind once, with every place it occurs.
    std::vector<std::string> kinds;
    std::map<std::string, std::vector<std::string>> places;
    for (const auto& [what, at] : unsupported_) {
      if (!places.count(what)) kinds.push_back(what);
      places[what].push_back(at);
    }
    std::string msg = str_cat("cannot import '", file_, "': unsupported TorchScript ops: ");
    for (size_t k = 0; k < kinds.size(); ++k) {
      msg += (k ? "; " : "") + kinds[k] + " ";
      const auto& ps = places[kinds[k]];
      for (size_t j = 0; j < ps.size(); ++j) msg += (j ? ", " : "") + ps[j];
    }
    if (!build_error_.empty()) msg += "; also: " + build_error_;
    throw GraphError(msg);
  }
  if (!build_error_.empty())
    throw GraphError(str_cat("cannot import '", file_, "': ", build_error_));
  NNOPT_CHECK(out.kind == SV::kAct, GraphError, "cannot import '", file_,
              "': forward returns a tensor that is not computed from its input");
  if (out.s == in_name) {  // forward returns its input
    std::string name = unique_name("identity");
    graph_.add(name, OpKind::kIdentity, NoAttrs{}, {in_name});
  } else {
    graph_.set_output(out.s);
  }
  graph_.infer_shapes();
  ImportedModel m;
  m.graph = std::move(graph_);
  m.tensors = std::move(tensors_);
  return m;
}

}  // namespace

ImportedModel import_torchscript(const std::string& path, const Shape& input_shape) {
  NNOPT_CHECK(path_exists(path), FileError, "TorchScript file '", path, "' does not exist");
  jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU);
  } catch (const c10::Error& e) {
    std::string why = e.what_without_backtrace();
    auto nl = why.find('\n');
    if (nl != std::string::npos) why = why.substr(0, nl);
    throw FileError(str_cat("'", path, "' is not a readable TorchScript file: ", why));
  } catch (const std::exception& e) {
    throw FileError(str_cat("'", path, "' is not a readable TorchScript file: ", e.what()));
  }
  return Importer(std::move(module), path, input_shape).run();
}

GraphModule import_torchscript_module(const std::string& path, const Shape& input_shape) {
  ImportedModel m = import_torchscript(path, input_shape);
  GraphModule gm(m.graph);
  gm->load_state(m.tensors, /*strict=*/true);
  gm->eval();
  return gm;
}

}  // namespace nnopt
