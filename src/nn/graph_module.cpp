#include "nnopt/nn/graph_module.h"

#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/nn/fold_bn.h"

namespace nnopt {

namespace {
std::vector<int64_t> ivec(const Pair& p) { return {p[0], p[1]}; }

torch::Tensor conv_forward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                           const Conv2dAttrs& a, ConvKernel k) {
  const bool plain = a.groups == 1 && a.dilation[0] == 1 && a.dilation[1] == 1;
  if (k == ConvKernel::kNative && plain)
    return at::thnn_conv2d(x, w, {w.size(2), w.size(3)}, b, ivec(a.stride), ivec(a.padding));
  if (k == ConvKernel::kOnednn && x.scalar_type() == at::kFloat && at::hasMKLDNN()) {
    const auto fmt = x.suggest_memory_format();  // input and weight in one order (see run())
    return at::mkldnn_convolution(x.contiguous(fmt), w.contiguous(fmt), b, ivec(a.padding), ivec(a.stride),
                                  ivec(a.dilation), a.groups);
  }
  return at::conv2d(x, w, b, ivec(a.stride), ivec(a.padding), ivec(a.dilation), a.groups);
}
}  // namespace

NodeModuleImpl& GraphModuleImpl::ensure_path(const std::string& dotted) {
  auto parts = split(dotted, '.');
  torch::nn::Module* cur = this;
  for (const auto& part : parts) {
    NNOPT_CHECK(!part.empty(), GraphError, "node name '", dotted,
                "' has an empty part between dots");
    auto children = cur->named_children();
    if (children.contains(part)) {
      cur = children[part].get();
    } else {
      auto m = std::make_shared<NodeModuleImpl>();
      cur->register_module(part, m);
      cur = m.get();
    }
  }
  auto* nm = dynamic_cast<NodeModuleImpl*>(cur);
  NNOPT_CHECK(nm, GraphError, "node '", dotted, "' collides with a module name");
  return *nm;
}

GraphModuleImpl::GraphModuleImpl(Graph graph) : graph_(std::move(graph)) {
  fold_bn_.assign(graph_.nodes().size(), -1);
  graph_.infer_shapes();
  const auto& nodes = graph_.nodes();
  mods_.resize(nodes.size());
  input_index_.resize(nodes.size());
  last_use_.assign(nodes.size(), -1);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    for (const auto& in : n.inputs) {
      size_t j = graph_.index_of(in);
      input_index_[i].push_back(j);
      last_use_[j] = static_cast<int>(i);
    }
    NodeModuleImpl& m = ensure_path(n.name);
    // Keep a shared_ptr to the registered module.
    mods_[i] = std::dynamic_pointer_cast<NodeModuleImpl>(m.shared_from_this());
    torch::NoGradGuard ng;
    switch (n.op) {
      case OpKind::kConv2d: {
        const auto& a = n.as<Conv2dAttrs>();
        auto w = torch::empty({a.out_channels, a.in_channels / a.groups, a.kernel[0], a.kernel[1]});
        // kaiming_normal_(mode=fan_out, nonlinearity=relu), as torchvision ResNet/MobileNet.
        double fan_out = static_cast<double>(a.out_channels / a.groups) * a.kernel[0] * a.kernel[1];
        w.normal_(0, std::sqrt(2.0 / fan_out));
        m.weight = m.register_parameter("weight", w);
        if (a.bias) m.bias = m.register_parameter("bias", torch::zeros({a.out_channels}));
        break;
      }
      case OpKind::kLinear: {
        const auto& a = n.as<LinearAttrs>();
        // nn.Linear default: kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        double bound = 1.0 / std::sqrt(static_cast<double>(a.in_features));
        m.weight = m.register_parameter(
            "weight", torch::empty({a.out_features, a.in_features}).uniform_(-bound, bound));
        if (a.bias)
          m.bias = m.register_parameter("bias",
                                        torch::empty({a.out_features}).uniform_(-bound, bound));
        break;
      }
      case OpKind::kBatchNorm: {
        const auto& a = n.as<BatchNormAttrs>();
        if (a.affine) {
          m.weight = m.register_parameter("weight", torch::ones({a.num_features}));
          m.bias = m.register_parameter("bias", torch::zeros({a.num_features}));
        }
        m.running_mean = m.register_buffer("running_mean", torch::zeros({a.num_features}));
        m.running_var = m.register_buffer("running_var", torch::ones({a.num_features}));
        m.num_batches_tracked =
            m.register_buffer("num_batches_tracked", torch::zeros({}, torch::kLong));
        break;
      }
      default:
        break;
    }
  }
  // The output is always kept.
  last_use_[graph_.index_of(graph_.output())] = static_cast<int>(nodes.size());
  // relu/relu6 may run in place when their input is read by nothing else and
  // comes from an op whose backward does not need its own output (conv,
  // linear, batch norm, add). Saves one activation-sized buffer per layer.
  inplace_ok_.assign(nodes.size(), 0);
  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    if (n.op != OpKind::kReLU && n.op != OpKind::kReLU6) continue;
    size_t j = input_index_[i][0];
    OpKind src = nodes[j].op;
    bool ok_src = src == OpKind::kConv2d || src == OpKind::kLinear ||
                  src == OpKind::kBatchNorm || src == OpKind::kAdd;
    inplace_ok_[i] = ok_src && last_use_[j] == static_cast<int>(i) &&
                     graph_.consumers(nodes[j].name).size() == 1;
  }
  // relu -> max_pool runs as max_pool -> relu: max pooling commutes with any
  // non-decreasing function, in value and in gradient (where all of a window
  // is <= 0 both orders pass no gradient), and the relu then touches a
  // quarter of the elements (2x2 pools), forward and backward. Applies when
  // the pool is the relu's only reader; run() keeps the order when the relu is
  // tapped or has an activation transform.
  relu_to_pool_.assign(nodes.size(), -1);
  for (size_t i = 0; i < nodes.size(); ++i) {
    if (nodes[i].op != OpKind::kReLU) continue;
    const auto readers = graph_.consumers(nodes[i].name);
    if (readers.size() != 1) continue;
    const int k = static_cast<int>(graph_.index_of(readers[0]));
    if (nodes[k].op == OpKind::kMaxPool && input_index_[k].size() == 1) relu_to_pool_[i] = k;
  }
}

NodeModuleImpl& GraphModuleImpl::node_module(const std::string& name) {
  return *mods_[graph_.index_of(name)];
}

void GraphModuleImpl::set_weight_transform(const std::string& node, TransformPtr t) {
  const Node& n = graph_.node(node);
  NNOPT_CHECK(n.op == OpKind::kConv2d || n.op == OpKind::kLinear, GraphError, "node '", node,
              "' (", op_name(n.op), "): weight transforms apply to conv2d and linear only");
  if (t && channels_last_) set_channels_last(false);  // see set_channels_last
  auto& m = node_module(node);
  if (m.weight_transform) m.unregister_module("weight_transform");
  m.weight_transform = t;
  if (t) m.register_module("weight_transform", t);
}

void GraphModuleImpl::set_activation_transform(const std::string& node, TransformPtr t) {
  if (t && channels_last_) set_channels_last(false);  // see set_channels_last
  auto& m = node_module(node);
  if (m.act_transform) m.unregister_module("act_transform");
  m.act_transform = t;
  if (t) m.register_module("act_transform", t);
}

void GraphModuleImpl::set_channels_last(bool on) {
  for (size_t i = 0; i < mods_.size(); ++i) {  // see the header
    const Node& n = graph_.nodes()[i];
    if (n.op == OpKind::kConv2d && n.as<Conv2dAttrs>().groups > 1) on = false;
    if (mods_[i]->weight_transform || mods_[i]->act_transform) on = false;
  }
  const auto fmt = on ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  torch::NoGradGuard ng;
  for (size_t i = 0; i < mods_.size(); ++i) {
    torch::Tensor& w = mods_[i]->weight;
    // 1x1 weights stay NCHW: run() convolves them NCHW (see there).
    if (graph_.nodes()[i].op == OpKind::kConv2d && w.defined() && w.dim() == 4 && w.size(2) * w.size(3) > 1)
      w.set_data(w.contiguous(fmt));  // the same parameter (optimizer state stays attached)
  }
  channels_last_ = on;
}

torch::Tensor GraphModuleImpl::effective_weight(const std::string& node) {
  auto& m = node_module(node);
  NNOPT_CHECK(m.weight.defined(), GraphError, "node '", node, "' has no weight");
  return layer_weight(graph_.index_of(node));
}

torch::Tensor GraphModuleImpl::weight_transform_input(const std::string& node) {
  auto& m = node_module(node);
  NNOPT_CHECK(m.weight.defined(), GraphError, "node '", node, "' has no weight");
  const size_t i = graph_.index_of(node);
  return fold_sim_ && fold_bn_[i] >= 0 ? m.weight * fold_factor(i) : m.weight;
}

void GraphModuleImpl::set_bn_fold_simulation(bool on) {
  fold_sim_ = on;
  fold_bn_.assign(graph_.nodes().size(), -1);
  if (!on) return;
  for (const auto& [src, bn] : plan_bn_folding(graph_))
    fold_bn_[graph_.index_of(src)] = static_cast<int>(graph_.index_of(bn));
}

torch::Tensor GraphModuleImpl::fold_factor(size_t i) {
  const size_t j = static_cast<size_t>(fold_bn_[i]);
  const NodeModuleImpl& b = *mods_[j];
  torch::Tensor s = torch::rsqrt(b.running_var + graph_.nodes()[j].as<BatchNormAttrs>().eps);
  // A channel with gamma = 0 outputs beta whatever its weights: its factor is
  // taken as 1 (transform(W * 0) / 0 would be 0 / 0, NaN in every output).
  if (b.weight.defined()) {
    const torch::Tensor g = b.weight.detach();
    s = s * torch::where(g == 0, torch::ones_like(g), b.weight);
  }
  std::vector<int64_t> shape(mods_[i]->weight.dim(), 1);
  shape[0] = -1;
  return s.reshape(shape);
}

torch::Tensor GraphModuleImpl::layer_weight(size_t i) {
  NodeModuleImpl& m = *mods_[i];
  if (!fold_sim_ || fold_bn_[i] < 0) return m.weight_transform ? m.weight_transform->forward(m.weight) : m.weight;
  const torch::Tensor s = fold_factor(i);
  const torch::Tensor w = m.weight * s;
  return (m.weight_transform ? m.weight_transform->forward(w) : w) / s;
}

torch::Tensor GraphModuleImpl::forward(const torch::Tensor& x) { return run(x, nullptr, nullptr); }

torch::Tensor GraphModuleImpl::forward(const torch::Tensor& x,
                                       const std::vector<std::string>& taps, TensorMap& out) {
  for (const auto& t : taps) graph_.index_of(t);  // throws on an unknown name
  return run(x, &taps, &out);
}

torch::Tensor GraphModuleImpl::run(const torch::Tensor& x, const std::vector<std::string>* taps,
                                   TensorMap* out) {
  const auto& nodes = graph_.nodes();
  const Shape& in_shape = graph_.input_shape();
  NNOPT_CHECK(x.dim() == static_cast<int64_t>(in_shape.size()) + 1 &&
                  std::equal(in_shape.begin(), in_shape.end(), x.sizes().begin() + 1),
              ValueError, "model input must be [N, ", c10::IntArrayRef(in_shape),
              "] (per-sample shape), got ", x.sizes());
  std::vector<torch::Tensor> v(nodes.size());
  std::vector<char> tapped(nodes.size(), 0), relu_deferred(nodes.size(), 0);
  if (taps)
    for (const auto& t : *taps) tapped[graph_.index_of(t)] = 1;
  const bool train = is_training();
  ScopedRunThreads run_threads(train ? 0 : run_threads_);

  for (size_t i = 0; i < nodes.size(); ++i) {
    const Node& n = nodes[i];
    NodeModuleImpl& m = *mods_[i];
    const auto& ins = input_index_[i];
    auto in0 = [&]() -> const torch::Tensor& { return v[ins[0]]; };
    torch::Tensor y;
    switch (n.op) {
      case OpKind::kInput:
        y = channels_last_ && x.dim() == 4 ? x.contiguous(at::MemoryFormat::ChannelsLast) : x;
        break;
      case OpKind::kConv2d: {
        const auto& a = n.as<Conv2dAttrs>();
        auto w = layer_weight(i);
        if (!channels_last_) {
          y = conv_forward(in0(), w, m.bias, a, m.conv_kernel);
        } else if (w.size(2) == 1 && w.size(3) == 1) {
          // A 1x1 weight's strides pass for both orders, and LibTorch 1.13's
          // convolution_backward then mixes them: with an NHWC input its
          // weight gradient was wrong (4->8 channels, stride 2: off by 29)
          // and it wrote past the buffer (the double free of session 8's
          // QAT tests). Such a conv runs NCHW; its output goes back to NHWC.
          y = conv_forward(in0().contiguous(), w.contiguous(), m.bias, a, m.conv_kernel)
                  .contiguous(at::MemoryFormat::ChannelsLast);
        } else {
          // Input and weight both NHWC (a no-op once the order is NHWC).
          y = conv_forward(in0().contiguous(at::MemoryFormat::ChannelsLast),
                           w.contiguous(at::MemoryFormat::ChannelsLast), m.bias, a, m.conv_kernel);
        }
        break;
      }
      case OpKind::kLinear: {
        auto w = layer_weight(i);
        y = at::linear(in0(), w, m.bias);
        break;
      }
      case OpKind::kBatchNorm: {
        const auto& a = n.as<BatchNormAttrs>();
        // A batch norm whose own module is in eval mode (frozen statistics,
        // QatOptions::freeze_bn_epoch) normalizes with its running
        // statistics, and leaves them as they are, while the model trains.
        const bool bn_train = train && m.is_training();
        if (bn_train) {
          torch::NoGradGuard ng;
          m.num_batches_tracked.add_(1);
        }
        y = at::batch_norm(in0(), m.weight, m.bias, m.running_mean, m.running_var, bn_train,
                           a.momentum, a.eps, false);
        break;
      }
      case OpKind::kReLU:
      case OpKind::kReLU6: {
        // In place only if the producer's value is not also a tap or a transform output.
        size_t j = ins[0];
        bool inplace = inplace_ok_[i] && !tapped[j] && !mods_[j]->act_transform;
        if (n.op == OpKind::kReLU && relu_to_pool_[i] >= 0 && !tapped[i] && !m.act_transform) {
          y = v[j];  // applied by the max_pool that reads it (see constructor)
          relu_deferred[i] = 1;
        } else if (n.op == OpKind::kReLU && m.act_transform && m.act_transform->absorbs_relu())
          y = v[j];  // the quantizer below clips at 0 itself (TransformImpl::absorbs_relu)
        else if (n.op == OpKind::kReLU)
          y = inplace ? at::relu_(v[j]) : at::relu(v[j]);
        else
          y = inplace ? at::hardtanh_(v[j], 0.0, 6.0) : at::hardtanh(v[j], 0.0, 6.0);
        break;
      }
      case OpKind::kHardswish:
        y = at::hardswish(in0());
        break;
      case OpKind::kMaxPool: {
        const auto& a = n.as<PoolAttrs>();
        y = at::max_pool2d(in0(), ivec(a.kernel), ivec(a.stride), ivec(a.padding), {1, 1},
                           a.ceil_mode);
        if (relu_deferred[ins[0]]) y = at::relu_(y);
        break;
      }
      case OpKind::kAvgPool: {
        const auto& a = n.as<PoolAttrs>();
        y = at::avg_pool2d(in0(), ivec(a.kernel), ivec(a.stride), ivec(a.padding), a.ceil_mode,
                           a.count_include_pad);
        break;
      }
      case OpKind::kGlobalAvgPool:
        y = at::adaptive_avg_pool2d(in0(), {1, 1});
        break;
      case OpKind::kFlatten:
        y = at::flatten(in0(), n.as<FlattenAttrs>().start_dim);
        break;
      case OpKind::kAdd:
        y = v[ins[0]] + v[ins[1]];
        for (size_t k = 2; k < ins.size(); ++k) y = y + v[ins[k]];
        break;
      case OpKind::kConcat: {
        std::vector<torch::Tensor> parts;
        for (auto k : ins) parts.push_back(v[k]);
        y = at::cat(parts, n.as<ConcatAttrs>().dim);
        break;
      }
      case OpKind::kDropout:
        y = at::dropout(in0(), n.as<DropoutAttrs>().p, train);
        break;
      case OpKind::kIdentity:
        y = in0();
        break;
      case OpKind::kCount:
        throw GraphError("invalid op");
    }
    if (m.act_transform) y = m.act_transform->forward(y);
    v[i] = std::move(y);
    if (tapped[i]) (*out)[n.name] = v[i];
    // Free inputs nobody reads any more (keeps peak memory at the live set).
    for (auto k : ins)
      if (last_use_[k] == static_cast<int>(i)) v[k] = torch::Tensor();
  }
  return v[graph_.index_of(graph_.output())];
}

TensorMap GraphModuleImpl::state() const {
  TensorMap out;
  for (const auto& p : named_parameters(true)) out[p.key()] = p.value();
  for (const auto& b : named_buffers(true)) out[b.key()] = b.value();
  return out;
}

void GraphModuleImpl::load_state(const TensorMap& tensors, bool strict) {
  TensorMap mine = state();
  torch::NoGradGuard ng;
  for (auto& [name, t] : mine) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      NNOPT_CHECK(!strict, ValueError, "tensor '", name, "' is missing from the loaded state");
      continue;
    }
    NNOPT_CHECK(it->second.sizes() == t.sizes(), ValueError, "tensor '", name, "' has shape ",
                it->second.sizes(), " in the loaded state but ", t.sizes(), " in the model");
    t.copy_(it->second);
  }
  if (strict)
    for (const auto& [name, t] : tensors)
      NNOPT_CHECK(mine.count(name), ValueError, "loaded state has tensor '", name,
                  "' that the model does not have");
}

}  // namespace nnopt
