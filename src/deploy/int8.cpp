// Lowering a calibrated fake-quant GraphModule to LibTorch's quantized
// kernels (onednn engine), running it, and saving / loading it.
#include "nnopt/deploy/int8.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/script.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <iomanip>
#include <list>
#include <mutex>
#include <sstream>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/quant/fake_quant.h"

namespace nnopt {

// Internal types of the integer program (a named namespace: Int8Model::Impl uses them).
namespace int8_impl {

using nlohmann::json;

enum class Kernel : int {
  kQuantize = 0,
  kConv2d,
  kConv2dRelu,
  kLinear,
  kLinearRelu,
  kAdd,
  kAddRelu,
  kCat,
  kHardswish,
  kRelu,
  kHardtanh,
  kMaxPool,
  kAvgPool,
  kGlobalAvgPool,
  kFlatten,
  kAlias,
  kCount
};

struct KernelInfo {
  Kernel kernel;
  const char* name;
  bool writes_qparams;  // the kernel takes the output scale / zero point
};
constexpr std::array<KernelInfo, static_cast<size_t>(Kernel::kCount)> kKernels = {{
    {Kernel::kQuantize, "quantize_per_tensor", true},
    {Kernel::kConv2d, "conv2d", true},
    {Kernel::kConv2dRelu, "conv2d_relu", true},
    {Kernel::kLinear, "linear", true},
    {Kernel::kLinearRelu, "linear_relu", true},
    {Kernel::kAdd, "add", true},
    {Kernel::kAddRelu, "add_relu", true},
    {Kernel::kCat, "cat", true},
    {Kernel::kHardswish, "hardswish", true},
    {Kernel::kRelu, "relu", false},
    {Kernel::kHardtanh, "hardtanh", false},
    {Kernel::kMaxPool, "max_pool2d", false},
    {Kernel::kAvgPool, "avg_pool2d", false},
    {Kernel::kGlobalAvgPool, "adaptive_avg_pool2d", false},
    {Kernel::kFlatten, "flatten", false},
    {Kernel::kAlias, "alias", false},
}};
static_assert(kKernels.size() == static_cast<size_t>(Kernel::kCount),
              "every Kernel needs a kKernels entry");

const KernelInfo& info(Kernel k) { return kKernels[static_cast<size_t>(k)]; }

bool kernel_from_name(const std::string& s, Kernel& out) {
  for (const auto& k : kKernels)
    if (s == k.name) {
      out = k.kernel;
      return true;
    }
  return false;
}

// The quantized operators, looked up once. Handles are held by value.
struct QOps {
  c10::OperatorHandle conv_prepack, linear_prepack, conv, conv_relu, linear, linear_relu, add,
      add_relu, cat, hardswish;
};

c10::OperatorHandle find_op(const char* name, const char* overload) {
  try {
    return c10::Dispatcher::singleton().findSchemaOrThrow(name, overload);
  } catch (const c10::Error& e) {
    throw GraphError(str_cat("int8: this LibTorch has no operator ", name,
                             *overload ? "." : "", overload, " (", e.what_without_backtrace(), ")"));
  }
}

const QOps& qops() {
  static const QOps ops{find_op("quantized::conv2d_prepack", ""),
                        find_op("quantized::linear_prepack", ""),
                        find_op("quantized::conv2d", "new"),
                        find_op("quantized::conv2d_relu", "new"),
                        find_op("quantized::linear", ""),
                        find_op("quantized::linear_relu", ""),
                        find_op("quantized::add", ""),
                        find_op("quantized::add_relu", ""),
                        find_op("quantized::cat", ""),
                        find_op("quantized::hardswish", "")};
  return ops;
}

c10::IValue call1(const c10::OperatorHandle& op, torch::jit::Stack stack) {
  op.callBoxed(&stack);
  return std::move(stack.at(0));
}

c10::List<int64_t> int_list(const Pair& p) { return c10::List<int64_t>({p[0], p[1]}); }

void ensure_engine() {
  if (at::globalContext().qEngine() != at::kONEDNN) use_onednn_engine();
}

}  // namespace int8_impl
using namespace int8_impl;

bool cpu_has_vnni() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512vnni") || __builtin_cpu_supports("avxvnni");
#else
  return false;
#endif
}

namespace int8_impl {
// The largest sum of two adjacent input channels' |weight code| * 255 (the
// largest u8 activation code) over every output channel and kernel tap:
// codes [O, I(/groups), kh, kw] or [O, I]; an odd last channel pairs with 0.
int64_t pair_bound_of(const torch::Tensor& codes) {
  torch::Tensor c = codes.to(torch::kInt32).abs();
  if (c.size(1) % 2 == 1) {
    std::vector<int64_t> pad(2 * (c.dim() - 2), 0);
    pad.push_back(0);
    pad.push_back(1);  // one zero channel at the end of dim 1
    c = at::constant_pad_nd(c, pad, 0);
  }
  std::vector<int64_t> shape{c.size(0), c.size(1) / 2, 2};
  for (int64_t d = 2; d < c.dim(); ++d) shape.push_back(c.size(d));
  return 255 * c.reshape(shape).sum(2).max().item<int64_t>();
}
}  // namespace int8_impl

void use_onednn_engine() {
  const auto& engines = at::globalContext().supportedQEngines();
  bool has = std::find(engines.begin(), engines.end(), at::kONEDNN) != engines.end();
  NNOPT_CHECK(has, ValueError, "int8: this LibTorch has no onednn quantized engine");
  at::globalContext().setQEngine(at::kONEDNN);
}

namespace int8_impl {
// One graph node of the integer program.
struct Step {
  Kernel kernel = Kernel::kAlias;
  std::vector<size_t> inputs;
  bool has_q = false;  // output qparams (kernel argument, or re-quantization target)
  double scale = 1;
  int64_t zero_point = 0;
  // conv2d / linear
  torch::Tensor codes;      // int8, weight shape
  torch::Tensor w_scale;    // float32 [C] (C = 1 per tensor)
  torch::Tensor w_zp;       // int64 [C]
  bool per_channel = false;
  torch::Tensor bias;       // float32 [out] or undefined
  int64_t pair_bound = 0;   // see Int8StepInfo::pair_bound
  c10::IValue packed;
};
}  // namespace int8_impl

struct Int8Model::Impl {
  Graph graph;
  std::vector<Step> steps;
  std::vector<int> last_use;

  // LibTorch 1.13's onednn convolution keeps one primitive per packed weight,
  // built for its first call's input shape, qparams and thread count, and
  // builds a new one on every call that differs: after a batch-500 evaluation
  // the batch-1 latency of resnet20 doubled (0.54 -> 1.04 ms). So each
  // (input shape, thread count) gets its own packed weights, created on first
  // use; the kMaxPacks most recently used are kept.
  using PackKey = std::pair<std::vector<int64_t>, int>;
  using Packs = std::vector<c10::IValue>;  // by step; None for steps without weights
  static constexpr size_t kMaxPacks = 8;
  mutable std::mutex packs_mutex;
  mutable std::list<std::pair<PackKey, std::shared_ptr<const Packs>>> packs;  // most recent first
  std::shared_ptr<const Packs> packs_for(const torch::Tensor& x) const;
  c10::IValue pack(size_t i) const;

  void prepare();  // prepacks weights, computes last uses
  /// taps/out optional: dequantized outputs of the named nodes.
  torch::Tensor run(const torch::Tensor& x, const std::vector<std::string>* taps = nullptr,
                    TensorMap* out = nullptr) const;
};

c10::IValue Int8Model::Impl::pack(size_t i) const {
  const Step& s = steps[i];
  const Node& n = graph.nodes()[i];
  const auto& ops = qops();
  torch::Tensor qw =
      s.per_channel
          ? at::_make_per_channel_quantized_tensor(s.codes, s.w_scale.to(torch::kFloat64), s.w_zp, 0)
          : at::_make_per_tensor_quantized_tensor(s.codes, s.w_scale.item<double>(),
                                                  s.w_zp.item<int64_t>());
  c10::IValue bias = s.bias.defined() ? c10::IValue(s.bias) : c10::IValue();
  try {
    if (n.op == OpKind::kConv2d) {
      const auto& a = n.as<Conv2dAttrs>();
      return call1(ops.conv_prepack, {qw, bias, int_list(a.stride), int_list(a.padding),
                                      int_list(a.dilation), a.groups});
    }
    return call1(ops.linear_prepack, {qw, bias});
  } catch (const c10::Error& e) {
    throw ValueError(str_cat("int8: node '", n.name, "': prepacking the weights failed: ",
                             e.what_without_backtrace()));
  }
}

std::shared_ptr<const Int8Model::Impl::Packs> Int8Model::Impl::packs_for(const torch::Tensor& x) const {
  PackKey key{x.sizes().vec(), at::get_num_threads()};
  std::lock_guard<std::mutex> lock(packs_mutex);
  for (auto it = packs.begin(); it != packs.end(); ++it)
    if (it->first == key) {
      packs.splice(packs.begin(), packs, it);
      return packs.front().second;
    }
  auto p = std::make_shared<Packs>(steps.size());
  for (size_t i = 0; i < steps.size(); ++i)
    if (!steps[i].packed.isNone()) (*p)[i] = packs.empty() ? steps[i].packed : pack(i);
  packs.emplace_front(std::move(key), std::move(p));
  if (packs.size() > kMaxPacks) packs.pop_back();
  return packs.front().second;
}

void Int8Model::Impl::prepare() {
  use_onednn_engine();
  const auto& nodes = graph.nodes();
  last_use.assign(nodes.size(), -1);
  for (size_t i = 0; i < steps.size(); ++i) {
    for (size_t k : steps[i].inputs) last_use[k] = static_cast<int>(i);
    Step& s = steps[i];
    if (s.kernel != Kernel::kConv2d && s.kernel != Kernel::kConv2dRelu &&
        s.kernel != Kernel::kLinear && s.kernel != Kernel::kLinearRelu)
      continue;
    s.pair_bound = pair_bound_of(s.codes);
    s.packed = pack(i);
  }
  last_use[graph.index_of(graph.output())] = static_cast<int>(steps.size());
}

torch::Tensor Int8Model::Impl::run(const torch::Tensor& x, const std::vector<std::string>* taps,
                                   TensorMap* out) const {
  std::vector<char> tapped(steps.size(), 0);
  if (taps)
    for (const auto& t : *taps) {
      NNOPT_CHECK(graph.contains(t), GraphError, "int8 forward: tap '", t, "' names no node");
      tapped[graph.index_of(t)] = 1;
    }
  const Shape& in_shape = graph.input_shape();
  bool ok = x.defined() && x.dim() == static_cast<int64_t>(in_shape.size()) + 1;
  for (size_t d = 0; ok && d < in_shape.size(); ++d) ok = x.size(d + 1) == in_shape[d];
  NNOPT_CHECK(ok, ValueError, "int8 forward: input must be [N, ", at::IntArrayRef(in_shape),
              " per sample], got ", x.defined() ? x.sizes() : at::IntArrayRef{});
  ensure_engine();
  const auto& ops = qops();
  const auto& nodes = graph.nodes();
  const std::shared_ptr<const Packs> packed = packs_for(x);
  std::vector<torch::Tensor> v(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const Step& s = steps[i];
    const Node& n = nodes[i];
    auto in = [&](size_t k) -> const torch::Tensor& { return v[s.inputs[k]]; };
    torch::Tensor y;
    switch (s.kernel) {
      case Kernel::kQuantize:
        y = at::quantize_per_tensor(x.to(torch::kFloat32).contiguous(), s.scale, s.zero_point,
                                    at::kQUInt8);
        break;
      case Kernel::kConv2d:
      case Kernel::kConv2dRelu:
        y = call1(s.kernel == Kernel::kConv2d ? ops.conv : ops.conv_relu,
                  {in(0), (*packed)[i], s.scale, s.zero_point})
                .toTensor();
        break;
      case Kernel::kLinear:
      case Kernel::kLinearRelu:
        y = call1(s.kernel == Kernel::kLinear ? ops.linear : ops.linear_relu,
                  {in(0), (*packed)[i], s.scale, s.zero_point})
                .toTensor();
        break;
      case Kernel::kAdd:
      case Kernel::kAddRelu: {
        // Three or more inputs: intermediate sums use the output qparams.
        y = in(0);
        for (size_t k = 1; k < s.inputs.size(); ++k) {
          const bool last = k + 1 == s.inputs.size();
          y = call1(last && s.kernel == Kernel::kAddRelu ? ops.add_relu : ops.add,
                    {y, in(k), s.scale, s.zero_point})
                  .toTensor();
        }
        break;
      }
      case Kernel::kCat: {
        c10::List<at::Tensor> parts;
        for (size_t k = 0; k < s.inputs.size(); ++k) parts.push_back(in(k));
        y = call1(ops.cat, {parts, n.as<ConcatAttrs>().dim, s.scale, s.zero_point}).toTensor();
        break;
      }
      case Kernel::kHardswish:
        y = call1(ops.hardswish, {in(0), s.scale, s.zero_point}).toTensor();
        break;
      case Kernel::kRelu:
        y = at::relu(in(0));
        break;
      case Kernel::kHardtanh:
        y = at::hardtanh(in(0), 0.0, 6.0);
        break;
      case Kernel::kMaxPool: {
        const auto& a = n.as<PoolAttrs>();
        y = at::max_pool2d(in(0), {a.kernel[0], a.kernel[1]}, {a.stride[0], a.stride[1]},
                           {a.padding[0], a.padding[1]}, {1, 1}, a.ceil_mode);
        break;
      }
      case Kernel::kAvgPool: {
        const auto& a = n.as<PoolAttrs>();
        y = at::avg_pool2d(in(0), {a.kernel[0], a.kernel[1]}, {a.stride[0], a.stride[1]},
                           {a.padding[0], a.padding[1]}, a.ceil_mode, a.count_include_pad);
        break;
      }
      case Kernel::kGlobalAvgPool:
        y = at::adaptive_avg_pool2d(in(0), {1, 1});
        break;
      case Kernel::kFlatten:
        y = at::flatten(in(0), n.as<FlattenAttrs>().start_dim);
        break;
      case Kernel::kAlias:
        y = in(0);
        break;
      case Kernel::kCount:
        break;
    }
    if (s.has_q && !info(s.kernel).writes_qparams &&
        (y.q_scale() != s.scale || y.q_zero_point() != s.zero_point))
      y = at::quantize_per_tensor(at::dequantize(y), s.scale, s.zero_point, at::kQUInt8);
    if (tapped[i]) (*out)[n.name] = at::dequantize(y);
    v[i] = std::move(y);
    for (size_t k : s.inputs)
      if (last_use[k] == static_cast<int>(i)) v[k] = torch::Tensor();
  }
  return v[graph.index_of(graph.output())];
}

// ---------------------------------------------------------------- lowering

namespace {

std::string where(const Node& n) { return str_cat("node '", n.name, "' (", op_name(n.op), ")"); }

FakeQuantPtr fake_quant_of(const Node& n, const TransformPtr& t, const char* kind) {
  if (!t) return nullptr;
  auto fq = std::dynamic_pointer_cast<FakeQuantImpl>(t);
  NNOPT_CHECK(fq, ValueError, "int8: ", where(n), " ", kind, " transform '", t->describe(),
              "' is not a FakeQuant; only fake-quant models can be lowered");
  return fq;
}

void check_calibrated(const Node& n, const FakeQuantImpl& fq, const char* kind) {
  NNOPT_CHECK(fq.quantizing() && !fq.observing(), ValueError, "int8: ", where(n), " ", kind,
              " quantizer is not calibrated (run calibrate() before lower_to_int8)");
}

void check_activation(const Node& n, const FakeQuantImpl& fq) {
  check_calibrated(n, fq, "activation");
  const QuantScheme& s = fq.scheme();
  NNOPT_CHECK(s.bits() == 8 && !s.is_signed() && !s.narrow_range() && !s.per_channel(),
              ValueError, "int8: ", where(n), " activation scheme ", s.describe(),
              " cannot run on the onednn int8 kernels (they need 8-bit unsigned activations,"
              " quint8, without narrow range)");
}

// Weight codes of conv2d/linear node `n` on the fake-quant grid.
void lower_weight(GraphModule& model, const Node& n, Step& st) {
  auto& m = model->node_module(n.name);
  auto fq = fake_quant_of(n, m.weight_transform, "weight");
  NNOPT_CHECK(fq, ValueError, "int8: ", where(n),
              " has no weight quantizer (attach_quantizers + calibrate first)");
  check_calibrated(n, *fq, "weight");
  const QuantScheme& s = fq->scheme();
  const QParams q = fq->qparams();
  NNOPT_CHECK(s.is_signed() && s.symmetric() && (!s.per_channel() || s.ch_axis() == 0) &&
                  q.zero_point.eq(0).all().item<bool>(),
              ValueError, "int8: ", where(n), " weight scheme ", s.describe(),
              " cannot run on the onednn int8 kernels (they need signed symmetric weights with"
              " zero point 0, per tensor or per output channel)");
  torch::NoGradGuard ng;
  torch::Tensor w = m.weight.detach().to(torch::kFloat32);
  torch::Tensor wq = fake_quantize(w, s, q);
  std::vector<int64_t> view(w.dim(), 1);
  view[0] = -1;
  torch::Tensor scale = q.scale.to(torch::kFloat32);
  torch::Tensor sv = s.per_channel() ? scale.reshape(view) : scale;
  st.codes = at::round(wq / sv).clamp(s.quant_min(), s.quant_max()).to(torch::kInt8).contiguous();
  st.w_scale = scale.contiguous();
  st.w_zp = torch::zeros({scale.numel()}, torch::kInt64);
  st.per_channel = s.per_channel();
  if (m.bias.defined()) st.bias = m.bias.detach().to(torch::kFloat32).contiguous().clone();
}

}  // namespace

Int8Model::Int8Model() = default;
Int8Model::Int8Model(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

Int8Model lower_to_int8(GraphModule& model) {
  auto impl = std::make_shared<Int8Model::Impl>();
  impl->graph = model->graph();
  const Graph& g = impl->graph;
  const auto& nodes = g.nodes();

  // Ops first: a model that cannot lower at all should say so before any
  // complaint about its quantizers.
  for (const Node& n : nodes) {
    if (n.op == OpKind::kBatchNorm) {
      const Node& p = g.node(n.inputs[0]);
      const bool foldable = p.op == OpKind::kConv2d || p.op == OpKind::kLinear;
      throw GraphError(str_cat(
          "int8: ", where(n), ": batch norm must be folded before integer lowering",
          foldable ? "; run fold_batch_norm first (then attach_quantizers and calibrate)"
                   : "; it does not follow a conv2d/linear, and a standalone batch norm has no "
                     "integer kernel here"));
    }
  }

  std::vector<FakeQuantPtr> act(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i) {
    act[i] = fake_quant_of(nodes[i], model->node_module(nodes[i].name).act_transform,
                           "activation");
    if (act[i]) check_activation(nodes[i], *act[i]);
  }
  auto qparams_of = [&](size_t i, Step& st) {
    QParams q = act[i]->qparams();
    st.has_q = true;
    st.scale = static_cast<double>(q.scale.item<float>());
    st.zero_point = q.zero_point.item<int64_t>();
  };
  auto is_relu = [](OpKind op) { return op == OpKind::kReLU || op == OpKind::kReLU6; };

  impl->steps.resize(nodes.size());
  std::vector<char> fused(nodes.size(), 0);  // relu/relu6 whose producer applied the quantizer
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    Step& st = impl->steps[i];
    for (const auto& name : n.inputs) st.inputs.push_back(g.index_of(name));
    switch (n.op) {
      case OpKind::kInput:
        NNOPT_CHECK(act[i], ValueError, "int8: ", where(n),
                    " has no activation quantizer; attach_quantizers with quantize_input(true)");
        st.kernel = Kernel::kQuantize;
        break;
      case OpKind::kConv2d:
      case OpKind::kLinear:
      case OpKind::kAdd: {
        // Fuse a following relu / relu6 that carries the group's quantizer.
        auto cons = g.consumers(n.name);
        bool fuse = false;
        if (!act[i] && cons.size() == 1 && n.name != g.output()) {
          size_t c = g.index_of(cons[0]);
          if (is_relu(nodes[c].op) && act[c]) {
            fuse = true;
            fused[c] = 1;
            qparams_of(c, st);
          }
        }
        NNOPT_CHECK(fuse || act[i], ValueError, "int8: ", where(n),
                    " has no activation quantizer on its output (attach_quantizers places one at"
                    " the end of each conv2d/linear/add group; then calibrate)");
        if (!fuse) qparams_of(i, st);
        if (n.op == OpKind::kConv2d) st.kernel = fuse ? Kernel::kConv2dRelu : Kernel::kConv2d;
        if (n.op == OpKind::kLinear) st.kernel = fuse ? Kernel::kLinearRelu : Kernel::kLinear;
        if (n.op == OpKind::kAdd) st.kernel = fuse ? Kernel::kAddRelu : Kernel::kAdd;
        if (n.op != OpKind::kAdd) lower_weight(model, n, st);
        break;
      }
      case OpKind::kReLU:
        st.kernel = fused[i] ? Kernel::kAlias : Kernel::kRelu;
        break;
      case OpKind::kReLU6:
        st.kernel = Kernel::kHardtanh;  // fused or not: relu done, clamp at 6 on quint8
        break;
      case OpKind::kHardswish:
      case OpKind::kConcat:
        NNOPT_CHECK(act[i], ValueError, "int8: ", where(n),
                    " has no activation quantizer on its output (attach_quantizers + calibrate)");
        st.kernel = n.op == OpKind::kHardswish ? Kernel::kHardswish : Kernel::kCat;
        break;
      case OpKind::kMaxPool:
        st.kernel = Kernel::kMaxPool;
        break;
      case OpKind::kAvgPool:
        st.kernel = Kernel::kAvgPool;
        break;
      case OpKind::kGlobalAvgPool:
        st.kernel = Kernel::kGlobalAvgPool;
        break;
      case OpKind::kFlatten:
        st.kernel = Kernel::kFlatten;
        break;
      case OpKind::kDropout:
      case OpKind::kIdentity:
        st.kernel = Kernel::kAlias;
        break;
      default:
        throw GraphError(str_cat("int8: ", where(n), " has no integer kernel"));
    }
    if (act[i] && !st.has_q) qparams_of(i, st);
  }
  impl->prepare();
  return Int8Model(impl);
}

// ---------------------------------------------------------------- running, info

namespace {
void require(const std::shared_ptr<Int8Model::Impl>& impl) {
  NNOPT_CHECK(impl, ValueError, "int8: empty Int8Model (use lower_to_int8 or Int8Model::load)");
}
}  // namespace

torch::Tensor Int8Model::forward_quantized(const torch::Tensor& x) const {
  require(impl_);
  torch::NoGradGuard ng;
  return impl_->run(x);
}

torch::Tensor Int8Model::forward(const torch::Tensor& x) const {
  return at::dequantize(forward_quantized(x));
}

torch::Tensor Int8Model::forward(const torch::Tensor& x, const std::vector<std::string>& taps,
                                 TensorMap& out) const {
  require(impl_);
  torch::NoGradGuard ng;
  return at::dequantize(impl_->run(x, &taps, &out));
}

const Graph& Int8Model::graph() const {
  require(impl_);
  return impl_->graph;
}

std::vector<Int8StepInfo> Int8Model::steps() const {
  require(impl_);
  std::vector<Int8StepInfo> out;
  const bool vnni = cpu_has_vnni();
  for (size_t i = 0; i < impl_->steps.size(); ++i) {
    const Step& s = impl_->steps[i];
    out.push_back({impl_->graph.nodes()[i].name, info(s.kernel).name, s.has_q, s.scale,
                   s.zero_point, s.pair_bound, s.pair_bound > 32767 && !vnni});
  }
  return out;
}

size_t Int8Model::packed_variants() const {
  require(impl_);
  std::lock_guard<std::mutex> lock(impl_->packs_mutex);
  return impl_->packs.size();
}

std::vector<std::string> Int8Model::saturating_layers() const {
  std::vector<std::string> names;
  for (const auto& s : steps())
    if (s.may_saturate) names.push_back(s.node);
  return names;
}

std::string Int8Model::summary() const {
  std::ostringstream os;
  size_t w = 4;
  for (const auto& s : steps()) w = std::max(w, s.node.size());
  os << std::left << std::setw(static_cast<int>(w)) << "node" << "  " << std::setw(20)
     << "kernel" << "  scale         zero_point\n";
  for (const auto& s : steps()) {
    os << std::setw(static_cast<int>(w)) << s.node << "  " << std::setw(20) << s.kernel;
    if (s.has_qparams) os << "  " << std::setw(12) << std::setprecision(6) << s.scale << "  " << s.zero_point;
    if (s.may_saturate) os << "  may saturate (pair sum up to " << s.pair_bound << ")";
    os << "\n";
  }
  const auto sat = saturating_layers();
  if (!sat.empty())
    os << sat.size() << " layer(s) may saturate: this CPU has no VNNI, so onednn adds pairs of"
       << " u8*s8 products in int16; weights of <= 7 bits run exactly\n";
  return os.str();
}

int64_t Int8Model::weight_bytes() const {
  require(impl_);
  int64_t b = 0;
  for (const Step& s : impl_->steps)
    for (const auto* t : {&s.codes, &s.w_scale, &s.w_zp, &s.bias})
      if (t->defined()) b += t->numel() * static_cast<int64_t>(t->element_size());
  return b;
}

// ---------------------------------------------------------------- save / load

void Int8Model::save(const std::string& path, const std::string& meta_json) const {
  require(impl_);
  json meta;
  try {
    meta = json::parse(meta_json);
  } catch (const json::exception& e) {
    throw ValueError(str_cat("Int8Model::save: meta_json is not valid JSON: ", e.what()));
  }
  NNOPT_CHECK(meta.is_object(), ValueError, "Int8Model::save: meta_json must be a JSON object");
  Checkpoint ck;
  ck.graph = impl_->graph;
  json steps = json::array();
  for (size_t i = 0; i < impl_->steps.size(); ++i) {
    const Step& s = impl_->steps[i];
    const std::string& name = impl_->graph.nodes()[i].name;
    json j = {{"node", name}, {"kernel", info(s.kernel).name}};
    if (s.has_q) {
      j["scale"] = s.scale;
      j["zero_point"] = s.zero_point;
    }
    if (s.codes.defined()) {
      j["per_channel"] = s.per_channel;
      ck.tensors[name + ".weight"] = s.codes;
      ck.tensors[name + ".weight_scale"] = s.w_scale;
      ck.tensors[name + ".weight_zero_point"] = s.w_zp;
      if (s.bias.defined()) ck.tensors[name + ".bias"] = s.bias;
    }
    steps.push_back(j);
  }
  meta["int8"] = {{"format", "nnopt-int8"}, {"version", 1}, {"engine", "onednn"},
                  {"steps", steps}};
  ck.meta_json = meta.dump();
  save_checkpoint(path, ck);
}

bool Int8Model::is_int8(const Checkpoint& ck) {
  const json meta = json::parse(ck.meta_json, nullptr, false);
  return meta.is_object() && meta.contains("int8") && meta["int8"].is_object() &&
         meta["int8"].value("format", "") == "nnopt-int8";
}

Int8Model Int8Model::load(const std::string& path) { return from_checkpoint(load_checkpoint(path), path); }

Int8Model Int8Model::from_checkpoint(const Checkpoint& ck, const std::string& path) {
  auto bad = [&](const std::string& what) {
    return FileError(str_cat(path, ": not a valid nnopt int8 model: ", what));
  };
  json meta;
  try {
    meta = json::parse(ck.meta_json);
  } catch (const json::exception&) {
    throw bad("metadata is not JSON");
  }
  if (!meta.is_object() || !meta.contains("int8"))
    throw bad("no 'int8' metadata (was it written by Int8Model::save?)");
  const json& m = meta["int8"];
  if (!m.is_object() || m.value("format", "") != "nnopt-int8" || m.value("version", 0) != 1 ||
      !m.contains("steps") || !m["steps"].is_array())
    throw bad("unknown int8 format or version");
  auto impl = std::make_shared<Int8Model::Impl>();
  impl->graph = ck.graph;
  const auto& nodes = impl->graph.nodes();
  const json& js = m["steps"];
  if (js.size() != nodes.size())
    throw bad(str_cat(js.size(), " steps for a graph of ", nodes.size(), " nodes"));
  impl->steps.resize(nodes.size());
  auto tensor = [&](const std::string& name, torch::ScalarType dt) {
    auto it = ck.tensors.find(name);
    if (it == ck.tensors.end()) throw bad(str_cat("tensor '", name, "' is missing"));
    if (it->second.scalar_type() != dt)
      throw bad(str_cat("tensor '", name, "' has dtype ", it->second.scalar_type(), ", expected ", dt));
    return it->second;
  };
  try {
    for (size_t i = 0; i < nodes.size(); ++i) {
      const Node& n = nodes[i];
      const json& j = js[i];
      Step& st = impl->steps[i];
      if (!j.is_object() || j.value("node", "") != n.name)
        throw bad(str_cat("step ", i, " does not name node '", n.name, "'"));
      if (!kernel_from_name(j.value("kernel", ""), st.kernel))
        throw bad(str_cat("node '", n.name, "': unknown kernel '", j.value("kernel", ""), "'"));
      for (const auto& name : n.inputs) st.inputs.push_back(impl->graph.index_of(name));
      if (j.contains("scale")) {
        st.has_q = true;
        st.scale = j.at("scale").get<double>();
        st.zero_point = j.at("zero_point").get<int64_t>();
        if (!(st.scale > 0) || st.zero_point < 0 || st.zero_point > 255)
          throw bad(str_cat("node '", n.name, "': bad qparams"));
      } else if (info(st.kernel).writes_qparams) {
        throw bad(str_cat("node '", n.name, "': kernel ", info(st.kernel).name, " needs qparams"));
      }
      const bool layer = n.op == OpKind::kConv2d || n.op == OpKind::kLinear;
      const bool layer_kernel = st.kernel == Kernel::kConv2d || st.kernel == Kernel::kConv2dRelu ||
                                st.kernel == Kernel::kLinear || st.kernel == Kernel::kLinearRelu;
      if (layer != layer_kernel ||
          (layer_kernel && (n.op == OpKind::kConv2d) !=
                               (st.kernel == Kernel::kConv2d || st.kernel == Kernel::kConv2dRelu)))
        throw bad(str_cat("node '", n.name, "' (", op_name(n.op), "): kernel ",
                          info(st.kernel).name, " does not fit"));
      if (!layer) continue;
      st.per_channel = j.value("per_channel", false);
      st.codes = tensor(n.name + ".weight", torch::kInt8);
      st.w_scale = tensor(n.name + ".weight_scale", torch::kFloat32);
      st.w_zp = tensor(n.name + ".weight_zero_point", torch::kInt64);
      std::vector<int64_t> shape;
      int64_t out = 0;
      bool has_bias = false;
      if (n.op == OpKind::kConv2d) {
        const auto& a = n.as<Conv2dAttrs>();
        shape = {a.out_channels, a.in_channels / a.groups, a.kernel[0], a.kernel[1]};
        out = a.out_channels;
        has_bias = a.bias;
      } else {
        const auto& a = n.as<LinearAttrs>();
        shape = {a.out_features, a.in_features};
        out = a.out_features;
        has_bias = a.bias;
      }
      if (st.codes.sizes() != at::IntArrayRef(shape))
        throw bad(str_cat("node '", n.name, "': weight shape ", st.codes.sizes()));
      const int64_t c = st.per_channel ? out : 1;
      if (st.w_scale.numel() != c || st.w_zp.numel() != c)
        throw bad(str_cat("node '", n.name, "': needs ", c, " weight scales"));
      if (!torch::isfinite(st.w_scale).all().item<bool>() || !(st.w_scale > 0).all().item<bool>())
        throw bad(str_cat("node '", n.name, "': weight scales must be positive and finite"));
      if (has_bias || ck.tensors.count(n.name + ".bias")) {
        st.bias = tensor(n.name + ".bias", torch::kFloat32);
        if (st.bias.numel() != out) throw bad(str_cat("node '", n.name, "': bias size"));
      }
    }
  } catch (const json::exception& e) {
    throw bad(e.what());
  }
  impl->prepare();
  return Int8Model(impl);
}

// ---------------------------------------------------------------- TorchScript

namespace {
// `torch` -> aten builtins (as the native resolver), `quantized` -> the
// quantized:: operators; the saved code then reads ops.quantized.conv2d(...).
struct Int8Resolver : public torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name,
                                                         torch::jit::GraphFunction&,
                                                         const torch::jit::SourceRange&) override {
    if (name == "torch") return std::make_shared<torch::jit::BuiltinModule>("aten");
    if (name == "quantized") return std::make_shared<torch::jit::BuiltinModule>("quantized");
    return nullptr;
  }
  c10::TypePtr resolveType(const std::string&, const torch::jit::SourceRange&) override {
    return nullptr;
  }
};

std::string num(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  std::string s = os.str();
  if (s.find_first_of(".eEn") == std::string::npos) s += ".0";
  return s;
}
std::string ints(const Pair& p) { return str_cat("[", p[0], ", ", p[1], "]"); }
}  // namespace

void Int8Model::export_torchscript(const std::string& path) const {
  require(impl_);
  namespace jit = torch::jit;
  const auto& nodes = impl_->graph.nodes();
  auto cu = std::make_shared<jit::CompilationUnit>();
  jit::Module root(c10::QualifiedName("__torch__.nnopt_export.NnoptInt8Model"), cu);
  root.register_attribute("training", c10::BoolType::get(), false);
  std::ostringstream f;
  f << "def forward(self, x: Tensor) -> Tensor:\n";
  constexpr int kQUInt8 = static_cast<int>(c10::ScalarType::QUInt8);
  auto var = [](size_t i) { return str_cat("v", i); };
  for (size_t i = 0; i < impl_->steps.size(); ++i) {
    const Step& s = impl_->steps[i];
    const Node& n = nodes[i];
    auto in = [&](size_t k) { return var(s.inputs[k]); };
    const std::string q = str_cat(num(s.scale), ", ", s.zero_point);
    const std::string y = var(i);
    f << "    # " << n.name << " (" << op_name(n.op) << ")\n    " << y << " = ";
    switch (s.kernel) {
      case Kernel::kQuantize:
        f << "torch.quantize_per_tensor(x, " << q << ", " << kQUInt8 << ")";
        break;
      case Kernel::kConv2d:
      case Kernel::kConv2dRelu:
      case Kernel::kLinear:
      case Kernel::kLinearRelu: {
        const std::string attr = str_cat("packed_", i);
        root.register_attribute(attr, s.packed.type(), s.packed);
        f << "quantized." << info(s.kernel).name << "(" << in(0) << ", self." << attr << ", " << q
          << ")";
        break;
      }
      case Kernel::kAdd:
      case Kernel::kAddRelu: {
        std::string acc = in(0);
        for (size_t k = 1; k < s.inputs.size(); ++k) {
          const bool last = k + 1 == s.inputs.size();
          acc = str_cat("quantized.", last && s.kernel == Kernel::kAddRelu ? "add_relu" : "add",
                        "(", acc, ", ", in(k), ", ", q, ")");
        }
        f << acc;
        break;
      }
      case Kernel::kCat: {
        f << "quantized.cat([";
        for (size_t k = 0; k < s.inputs.size(); ++k) f << (k ? ", " : "") << in(k);
        f << "], " << n.as<ConcatAttrs>().dim << ", " << q << ")";
        break;
      }
      case Kernel::kHardswish:
        f << "quantized.hardswish(" << in(0) << ", " << q << ")";
        break;
      case Kernel::kRelu:
        f << "torch.relu(" << in(0) << ")";
        break;
      case Kernel::kHardtanh:
        f << "torch.hardtanh(" << in(0) << ", 0.0, 6.0)";
        break;
      case Kernel::kMaxPool: {
        const auto& a = n.as<PoolAttrs>();
        f << "torch.max_pool2d(" << in(0) << ", " << ints(a.kernel) << ", " << ints(a.stride)
          << ", " << ints(a.padding) << ", [1, 1], " << (a.ceil_mode ? "True" : "False") << ")";
        break;
      }
      case Kernel::kAvgPool: {
        const auto& a = n.as<PoolAttrs>();
        f << "torch.avg_pool2d(" << in(0) << ", " << ints(a.kernel) << ", " << ints(a.stride)
          << ", " << ints(a.padding) << ", " << (a.ceil_mode ? "True" : "False") << ", "
          << (a.count_include_pad ? "True" : "False") << ")";
        break;
      }
      case Kernel::kGlobalAvgPool:
        f << "torch.adaptive_avg_pool2d(" << in(0) << ", [1, 1])";
        break;
      case Kernel::kFlatten:
        f << "torch.flatten(" << in(0) << ", " << n.as<FlattenAttrs>().start_dim << ")";
        break;
      case Kernel::kAlias:
      case Kernel::kCount:
        f << in(0);
        break;
    }
    f << "\n";
    if (s.has_q && !info(s.kernel).writes_qparams)
      f << "    if " << y << ".q_scale() != " << num(s.scale) << " or " << y
        << ".q_zero_point() != " << s.zero_point << ":\n        " << y
        << " = torch.quantize_per_tensor(torch.dequantize(" << y << "), " << q << ", " << kQUInt8
        << ")\n";
  }
  f << "    return torch.dequantize(" << var(impl_->graph.index_of(impl_->graph.output()))
    << ")\n";
  try {
    root.define(f.str(), std::make_shared<Int8Resolver>());
  } catch (const c10::Error& e) {
    throw ValueError(str_cat("cannot export the int8 model to TorchScript: ",
                             e.what_without_backtrace()));
  }
  std::ostringstream bytes;
  try {
    root.save(bytes);
  } catch (const c10::Error& e) {
    throw FileError(str_cat("cannot write TorchScript file '", path, "': ",
                            e.what_without_backtrace()));
  }
  write_file_atomic(path, bytes.str());
}

}  // namespace nnopt
