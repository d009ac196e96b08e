// lenet5: classic LeNet-5 (LeCun et al. 1998) with ReLU and max pooling.
//   conv1 6 k5 (pad 2 when H or W < 32, so 28x28 behaves like 32x32; else pad 0)
//   -> relu1 -> pool1 2 -> conv2 16 k5 -> relu2 -> pool2 2 -> flatten
//   -> fc1 120 -> relu3 -> fc2 84 -> relu4 -> [dropout] -> fc3 num_classes
// Every width (6, 16, 120, 84) is scaled by the width multiplier (scale_channels).
#include "nnopt/models/zoo.h"

namespace nnopt {

Graph build_lenet5(const ModelOptions& opt) {
  detail::check_options("lenet5", opt);
  // With pad 2 an HxW input reaches pool2 as floor((floor(H / 2) - 4) / 2), >= 1 for H >= 12;
  // unpadded inputs are >= 32 by the rule above.
  detail::check_image_input("lenet5", opt, 12);
  const auto& s = opt.input_shape;
  const int64_t pad = (s[1] < 32 || s[2] < 32) ? 2 : 0;
  Graph g;
  std::string x = g.input("input", s);
  x = g.conv2d("conv1", x, detail::scale_channels(6, opt.width), 5, 1, pad, 1, /*bias=*/true);
  x = g.unary("relu1", OpKind::kReLU, x);
  x = g.max_pool("pool1", x, 2, 2);
  x = g.conv2d("conv2", x, detail::scale_channels(16, opt.width), 5, 1, 0, 1, /*bias=*/true);
  x = g.unary("relu2", OpKind::kReLU, x);
  x = g.max_pool("pool2", x, 2, 2);
  x = g.flatten("flatten", x);  // [16, 5, 5] -> [400] for 28x28 and 32x32
  x = g.linear("fc1", x, detail::scale_channels(120, opt.width));
  x = g.unary("relu3", OpKind::kReLU, x);
  x = g.linear("fc2", x, detail::scale_channels(84, opt.width));
  x = g.unary("relu4", OpKind::kReLU, x);
  detail::add_classifier(g, x, "dropout", "fc3", opt);
  return g;
}

}  // namespace nnopt
