// mobilenetv2: MobileNetV2 of Sandler et al. 2018 in torchvision's layout and names.
//   features.0: ConvBNReLU6 3x3 to make_divisible(32w)  (".0" conv, ".1" bn, ".2" relu6)
//   features.1..17: inverted residual blocks, settings t, c, n, s below; each block
//     "features.i.conv.<j>": [1x1 expand ConvBNReLU6 if t != 1], 3x3 depthwise
//     ConvBNReLU6 (stride), 1x1 linear projection conv, BN; "features.i.add" adds the
//     input when stride == 1 and in == out channels
//   features.18: ConvBNReLU6 1x1 to make_divisible(1280 * max(1, w))
//   avgpool (global) -> flatten -> [classifier.0 dropout] -> classifier.1 linear
// Channels are make_divisible(c * w, 8), as torchvision. The classifier's dropout is
// only there when opt.dropout > 0 (torchvision always has 0.2).
//
// CIFAR adaptation (for 32x32 and 28x28 inputs): the stem conv has stride 1 instead of 2
// and the first block of the second setting (c = 24) has stride 1 instead of 2, so the
// network downsamples 8x instead of 32x (32x32 -> 4x4 before the pool). Parameter
// counts equal torchvision's; only the MACs differ.
#include <algorithm>

#include "nnopt/models/zoo.h"

namespace nnopt {

namespace {

struct Setting {
  int64_t t, c, n, s;  ///< expansion, output channels, repeats, first-block stride
};
constexpr Setting kSettings[] = {
    {1, 16, 1, 1}, {6, 24, 2, 1 /* 2 on ImageNet */}, {6, 32, 3, 2}, {6, 64, 4, 2},
    {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1},
};
constexpr int64_t kStemStride = 1;  // 2 on ImageNet
constexpr int64_t kStemChannels = 32;
constexpr int64_t kLastChannels = 1280;

// "<prefix>.0" conv k x k (pad k / 2, no bias) -> "<prefix>.1" bn -> "<prefix>.2" relu6
std::string conv_bn_relu6(Graph& g, const std::string& prefix, const std::string& in,
                          int64_t out, int64_t kernel, int64_t stride, int64_t groups) {
  std::string x = g.conv2d(prefix + ".0", in, out, kernel, stride, (kernel - 1) / 2, groups);
  x = g.batch_norm(prefix + ".1", x);
  return g.unary(prefix + ".2", OpKind::kReLU6, x);
}

// [in, H, W] -> [out, H / stride, W / stride]
std::string inverted_residual(Graph& g, const std::string& prefix, const std::string& in,
                              int64_t out, int64_t stride, int64_t expand) {
  const int64_t in_ch = g.node(in).shape[0];
  const int64_t hidden = in_ch * expand;
  int j = 0;
  auto next = [&]() { return prefix + ".conv." + std::to_string(j++); };
  std::string x = in;
  if (expand != 1) x = conv_bn_relu6(g, next(), x, hidden, 1, 1, 1);
  x = conv_bn_relu6(g, next(), x, hidden, 3, stride, hidden);  // depthwise
  x = g.conv2d(next(), x, out, 1, 1, 0);
  x = g.batch_norm(next(), x);
  if (stride == 1 && in_ch == out) x = g.add_op(prefix + ".add", {in, x});
  return x;
}

}  // namespace

Graph build_mobilenetv2(const ModelOptions& opt) {
  detail::check_options("mobilenetv2", opt);
  detail::check_image_input("mobilenetv2", opt, 1);
  Graph g;
  std::string x = g.input("input", opt.input_shape);
  int index = 0;
  auto name = [&]() { return "features." + std::to_string(index++); };
  x = conv_bn_relu6(g, name(), x, detail::make_divisible(kStemChannels * opt.width), 3,
                    kStemStride, 1);
  for (const Setting& st : kSettings) {
    const int64_t out = detail::make_divisible(static_cast<double>(st.c) * opt.width);
    for (int64_t i = 0; i < st.n; ++i)
      x = inverted_residual(g, name(), x, out, i == 0 ? st.s : 1, st.t);
  }
  const int64_t last = detail::make_divisible(kLastChannels * std::max(1.0, opt.width));
  x = conv_bn_relu6(g, name(), x, last, 1, 1, 1);
  x = g.add("avgpool", OpKind::kGlobalAvgPool, NoAttrs{}, {x});  // [C, H, W] -> [C, 1, 1]
  x = g.flatten("flatten", x);                                   // -> [C]
  detail::add_classifier(g, x, "classifier.0", "classifier.1", opt);
  return g;
}

}  // namespace nnopt
