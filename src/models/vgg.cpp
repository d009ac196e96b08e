// vgg-small: VGG-style features [64, 64, M, 128, 128, M, 256, 256, M], each number a
// 3x3 conv (pad 1, no bias) + BN + ReLU with round(c * width) channels, M a 2x2 max
// pool; then global average pool, flatten, [dropout], fc. Names follow torchvision's
// VGG: the feature layers are "features.<index in the Sequential>".
#include "nnopt/models/zoo.h"

namespace nnopt {

namespace {
constexpr int64_t kPool = -1;
constexpr int64_t kConfig[] = {64, 64, kPool, 128, 128, kPool, 256, 256, kPool};
}  // namespace

Graph build_vgg_small(const ModelOptions& opt) {
  detail::check_options("vgg-small", opt);
  detail::check_image_input("vgg-small", opt, 8);  // three 2x2 pools
  Graph g;
  std::string x = g.input("input", opt.input_shape);
  int index = 0;
  auto name = [&]() { return "features." + std::to_string(index++); };
  for (int64_t c : kConfig) {
    if (c == kPool) {
      x = g.max_pool(name(), x, 2, 2);
      continue;
    }
    x = g.conv2d(name(), x, detail::scale_channels(c, opt.width), 3, 1, 1, 1, /*bias=*/false);
    x = g.batch_norm(name(), x);
    x = g.unary(name(), OpKind::kReLU, x);
  }
  x = g.add("avgpool", OpKind::kGlobalAvgPool, NoAttrs{}, {x});  // [C, H, W] -> [C, 1, 1]
  x = g.flatten("flatten", x);                                   // -> [C]
  detail::add_classifier(g, x, "dropout", "fc", opt);
  return g;
}

}  // namespace nnopt
