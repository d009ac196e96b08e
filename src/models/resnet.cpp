// resnet: CIFAR ResNet of He et al. 2016 ("Deep Residual Learning", section 4.2).
//   stem: conv1 3x3 16w (no bias) -> bn1 -> relu
//   layer1..layer3: n = (depth - 2) / 6 BasicBlocks each, 16w / 32w / 64w channels,
//   first-block strides 1 / 2 / 2
//   avgpool (global) -> flatten -> [dropout] -> fc
// BasicBlock "layerS.B": conv1 3x3 (stride) -> bn1 -> relu1 -> conv2 3x3 -> bn2,
// add ("add") the shortcut, relu2.
// Shortcut: option B of the paper, a 1x1 conv ("shortcut.0", stride, no bias) + BN
// ("shortcut.1") where the stride or the channel count changes, identity otherwise.
// (Option A, zero-padded identity, has no parameters: resnet20 would then have
// 269,722 parameters instead of 272,474.)
#include "nnopt/core/error.h"
#include "nnopt/models/zoo.h"

namespace nnopt {

namespace {

// [in_planes, H, W] -> [planes, H / stride, W / stride]
std::string basic_block(Graph& g, const std::string& prefix, const std::string& in,
                        int64_t planes, int64_t stride) {
  const int64_t in_planes = g.node(in).shape[0];
  std::string x = g.conv2d(prefix + ".conv1", in, planes, 3, stride, 1);
  x = g.batch_norm(prefix + ".bn1", x);
  x = g.unary(prefix + ".relu1", OpKind::kReLU, x);
  x = g.conv2d(prefix + ".conv2", x, planes, 3, 1, 1);
  x = g.batch_norm(prefix + ".bn2", x);
  std::string shortcut = in;
  if (stride != 1 || in_planes != planes) {
    shortcut = g.conv2d(prefix + ".shortcut.0", in, planes, 1, stride, 0);
    shortcut = g.batch_norm(prefix + ".shortcut.1", shortcut);
  }
  x = g.add_op(prefix + ".add", {x, shortcut});
  return g.unary(prefix + ".relu2", OpKind::kReLU, x);
}

}  // namespace

Graph build_resnet(const ModelOptions& opt) {
  detail::check_options("resnet", opt);
  NNOPT_CHECK(opt.depth >= 8 && (opt.depth - 2) % 6 == 0, ValueError,
              "resnet: depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 56, 110, ...), got ",
              opt.depth);
  detail::check_image_input("resnet", opt, 1);
  const int64_t blocks = (opt.depth - 2) / 6;
  Graph g;
  std::string x = g.input("input", opt.input_shape);
  x = g.conv2d("conv1", x, detail::scale_channels(16, opt.width), 3, 1, 1);
  x = g.batch_norm("bn1", x);
  x = g.unary("relu", OpKind::kReLU, x);
  const int64_t stage_channels[3] = {16, 32, 64};
  const int64_t stage_strides[3] = {1, 2, 2};
  for (int s = 0; s < 3; ++s) {
    const int64_t planes = detail::scale_channels(stage_channels[s], opt.width);
    for (int64_t b = 0; b < blocks; ++b) {
      const std::string prefix = "layer" + std::to_string(s + 1) + "." + std::to_string(b);
      x = basic_block(g, prefix, x, planes, b == 0 ? stage_strides[s] : 1);
    }
  }
  x = g.add("avgpool", OpKind::kGlobalAvgPool, NoAttrs{}, {x});  // [C, H, W] -> [C, 1, 1]
  x = g.flatten("flatten", x);                                   // -> [C]
  detail::add_classifier(g, x, "dropout", "fc", opt);
  return g;
}

}  // namespace nnopt
