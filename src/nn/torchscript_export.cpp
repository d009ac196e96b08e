// GraphModule -> TorchScript file. See nnopt/nn/torchscript.h for the contract.
//
// Layout of the exported module:
//   root (class NnoptModel)             forward(x): calls the node modules in graph order
//   ├─ <node path parts>                 one submodule per dotted part
//   │    node modules (class NnoptNode<i>) hold the node's tensors and a one-line forward
//   │    other parts (class NnoptContainer<i>) are empty containers
// so that PyTorch's state_dict keys equal nnopt's tensor names.
#include <torch/script.h>

#include <iomanip>
#include <map>
#include <set>
#include <sstream>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/core/file_util.h"
#include "nnopt/nn/torchscript.h"

namespace nnopt {
namespace {
namespace jit = torch::jit;

bool is_identifier(const std::string& s) {
  static const std::set<std::string> kKeywords = {
      "False",   "None",     "True",     "and",    "as",    "assert", "async",  "await",
      "break",   "class",    "continue", "def",    "del",   "elif",   "else",   "except",
      "finally", "for",      "from",     "global", "if",    "import", "in",     "is",
      "lambda",  "nonlocal", "not",      "or",     "pass",  "raise",  "return", "try",
      "while",   "with",     "yield",    "self",   "torch", "Tensor", "getattr"};
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return !kKeywords.count(s);
}

// "self.layer1.0.conv1" as TorchScript: self.layer1 then getattr(..., "0") then .conv1
std::string access(const std::string& dotted) {
  std::string e = "self";
  for (const auto& part : split(dotted, '.'))
    e = is_identifier(part) ? e + "." + part : "getattr(" + e + ", \"" + part + "\")";
  return e;
}

// A float literal that TorchScript types as float ("0.0", not "0").
std::string float_lit(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  std::string s = os.str();
  if (s.find_first_of(".einn") == std::string::npos) s += ".0";
  return s;
}
std::string pair_lit(const Pair& p) { return str_cat("[", p[0], ", ", p[1], "]"); }
const char* bool_lit(bool b) { return b ? "True" : "False"; }

// The forward of one node module. Single-input ops take x; add/concat take x0, x1, ...
std::string node_forward(const Node& n, const NodeModuleImpl& m) {
  std::string args, x = "x";
  if (n.op == OpKind::kAdd || n.op == OpKind::kConcat) {
    for (size_t k = 0; k < n.inputs.size(); ++k) args += str_cat(", x", k, ": Tensor");
  } else {
    args = ", x: Tensor";
  }
  auto opt = [](const torch::Tensor& t, const char* name) {
    return t.defined() ? std::string("self.") + name : std::string("None");
  };
  std::string body;
  switch (n.op) {
    case OpKind::kConv2d: {
      const auto& a = n.as<Conv2dAttrs>();
      body = str_cat("torch.conv2d(x, self.weight, ", opt(m.bias, "bias"), ", ", pair_lit(a.stride),
                     ", ", pair_lit(a.padding), ", ", pair_lit(a.dilation), ", ", a.groups, ")");
      break;
    }
    case OpKind::kLinear:
      body = str_cat("torch.linear(x, self.weight, ", opt(m.bias, "bias"), ")");
      break;
    case OpKind::kBatchNorm: {
      const auto& a = n.as<BatchNormAttrs>();
      body = str_cat("torch.batch_norm(x, ", opt(m.weight, "weight"), ", ", opt(m.bias, "bias"),
                     ", self.running_mean, self.running_var, False, ", float_lit(a.momentum), ", ",
                     float_lit(a.eps), ", False)");
      break;
    }
    case OpKind::kReLU:
      body = "torch.relu(x)";
      break;
    case OpKind::kReLU6:
      body = "torch.hardtanh(x, 0.0, 6.0)";
      break;
    case OpKind::kHardswish:
      body = "torch.hardswish(x)";
      break;
    case OpKind::kMaxPool: {
      const auto& a = n.as<PoolAttrs>();
      body = str_cat("torch.max_pool2d(x, ", pair_lit(a.kernel), ", ", pair_lit(a.stride), ", ",
                     pair_lit(a.padding), ", [1, 1], ", bool_lit(a.ceil_mode), ")");
      break;
    }
    case OpKind::kAvgPool: {
      const auto& a = n.as<PoolAttrs>();
      body = str_cat("torch.avg_pool2d(x, ", pair_lit(a.kernel), ", ", pair_lit(a.stride), ", ",
                     pair_lit(a.padding), ", ", bool_lit(a.ceil_mode), ", ",
                     bool_lit(a.count_include_pad), ", None)");
      break;
    }
    case OpKind::kGlobalAvgPool:
      body = "torch.adaptive_avg_pool2d(x, [1, 1])";
      break;
    case OpKind::kFlatten:
      body = str_cat("torch.flatten(x, ", n.as<FlattenAttrs>().start_dim, ", -1)");
      break;
    case OpKind::kAdd:
      for (size_t k = 0; k < n.inputs.size(); ++k) body += str_cat(k ? " + " : "", "x", k);
      break;
    case OpKind::kConcat: {
      body = "torch.cat([";
      for (size_t k = 0; k < n.inputs.size(); ++k) body += str_cat(k ? ", " : "", "x", k);
      body += str_cat("], ", n.as<ConcatAttrs>().dim, ")");
      break;
    }
    case OpKind::kDropout:  // eval semantics; kept as an op so that it imports back
      body = str_cat("torch.dropout(x, ", float_lit(n.as<DropoutAttrs>().p), ", False)");
      break;
    case OpKind::kIdentity:
      body = "x";
      break;
    case OpKind::kInput:
    case OpKind::kCount:
      throw ValueError(str_cat("node '", n.name, "': cannot export this op"));
  }
  return str_cat("def forward(self", args, ") -> Tensor:\n    return ", body, "\n");
}

}  // namespace

void export_torchscript(GraphModule& model, const std::string& path) {
  const Graph& g = model->graph();
  const std::string& input = g.input_name();
  std::set<std::string> node_paths;
  for (const Node& n : g.nodes()) {
    if (n.op == OpKind::kInput) continue;
    NodeModuleImpl& m = model->node_module(n.name);
    NNOPT_CHECK(!m.weight_transform, ValueError, "cannot export node '", n.name,
                "' to TorchScript: it has a weight transform (", m.weight_transform->describe(),
                "); transforms are not exported yet");
    NNOPT_CHECK(!m.act_transform, ValueError, "cannot export node '", n.name,
                "' to TorchScript: it has an activation transform (", m.act_transform->describe(),
                "); transforms are not exported yet");
    for (const auto& part : split(n.name, '.'))
      NNOPT_CHECK(!part.empty() && part.find_first_of("\"\\\n") == std::string::npos &&
                      part != "training" && part != "forward",
                  ValueError, "cannot export node '", n.name, "' to TorchScript: the name part '",
                  part, "' cannot be a module attribute");
    node_paths.insert(n.name);
  }

  auto cu = std::make_shared<jit::CompilationUnit>();
  int counter = 0;
  auto make_module = [&](const std::string& cls) {
    jit::Module m(c10::QualifiedName(str_cat("__torch__.nnopt_export.", cls, counter++)), cu);
    if (!m.type()->hasAttribute("training"))
      m.register_attribute("training", c10::BoolType::get(), false);
    return m;
  };
  jit::Module root = make_module("NnoptModel");
  std::map<std::string, jit::Module> mods;  // path -> module
  auto ensure = [&](const std::string& dotted) -> jit::Module& {
    std::string cur;
    jit::Module* parent = &root;
    for (const auto& part : split(dotted, '.')) {
      cur = cur.empty() ? part : cur + "." + part;
      auto it = mods.find(cur);
      if (it == mods.end()) {
        jit::Module m = make_module(node_paths.count(cur) ? "NnoptNode" : "NnoptContainer");
        try {
          parent->register_module(part, m);
        } catch (const c10::Error& e) {
          throw ValueError(str_cat("cannot export node '", dotted, "' to TorchScript: '", cur,
                                   "' cannot be a submodule: ", e.what_without_backtrace()));
        }
        it = mods.emplace(cur, m).first;
      }
      parent = &it->second;
    }
    return *parent;
  };

  torch::NoGradGuard no_grad;
  auto copy = [](const torch::Tensor& t) { return t.detach().clone(); };
  for (const Node& n : g.nodes()) {
    if (n.op == OpKind::kInput) continue;
    jit::Module& jm = ensure(n.name);
    NodeModuleImpl& m = model->node_module(n.name);
    try {
      if (m.weight.defined())
        jm.register_parameter("weight", copy(m.weight).requires_grad_(true), false);
      if (m.bias.defined()) jm.register_parameter("bias", copy(m.bias).requires_grad_(true), false);
      if (m.running_mean.defined()) jm.register_buffer("running_mean", copy(m.running_mean));
      if (m.running_var.defined()) jm.register_buffer("running_var", copy(m.running_var));
      if (m.num_batches_tracked.defined())
        jm.register_buffer("num_batches_tracked", copy(m.num_batches_tracked));
    } catch (const c10::Error& e) {
      throw ValueError(str_cat("cannot export node '", n.name,
                               "' to TorchScript: ", e.what_without_backtrace()));
    }
  }

  // Node forwards, then the root forward that wires them.
  std::string in_var = is_identifier(input) ? input : "input";
  if (in_var.size() > 1 && in_var[0] == 'v' &&
      in_var.find_first_not_of("0123456789", 1) == std::string::npos)
    in_var = "input";
  std::map<std::string, std::string> var;  // node -> variable
  var[input] = in_var;
  std::ostringstream fwd;
  fwd << "def forward(self, " << in_var << ": Tensor) -> Tensor:\n";
  int k = 0;
  for (const Node& n : g.nodes()) {
    if (n.op == OpKind::kInput) continue;
    std::string src = node_forward(n, model->node_module(n.name));
    try {
      mods.at(n.name).define(src);
    } catch (const c10::Error& e) {
      throw ValueError(str_cat("cannot export node '", n.name,
                               "' to TorchScript: ", e.what_without_backtrace()));
    }
    std::string v = str_cat("v", k++);
    fwd << "    " << v << " = " << access(n.name) << ".forward(";
    for (size_t i = 0; i < n.inputs.size(); ++i) fwd << (i ? ", " : "") << var.at(n.inputs[i]);
    fwd << ")\n";
    var[n.name] = v;
  }
  fwd << "    return " << var.at(g.output()) << "\n";
  try {
    root.define(fwd.str());
  } catch (const c10::Error& e) {
    throw ValueError(
        str_cat("cannot export the model to TorchScript: ", e.what_without_backtrace()));
  }
  std::ostringstream bytes;
  try {
    root.save(bytes);
  } catch (const c10::Error& e) {
    throw FileError(
        str_cat("cannot write TorchScript file '", path, "': ", e.what_without_backtrace()));
  }
  write_file_atomic(path, bytes.str());
}

}  // namespace nnopt
