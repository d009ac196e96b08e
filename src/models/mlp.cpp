// mlp: flatten -> fc1 256 -> relu1 -> fc2 128 -> relu2 -> [dropout] -> fc3 num_classes.
#include "nnopt/models/zoo.h"

namespace nnopt {

Graph build_mlp(const ModelOptions& opt) {
  detail::check_options("mlp", opt);
  Graph g;
  std::string x = g.input("input", opt.input_shape);
  x = g.flatten("flatten", x);  // [*input_shape] -> [prod(input_shape)]
  x = g.linear("fc1", x, detail::scale_channels(256, opt.width));
  x = g.unary("relu1", OpKind::kReLU, x);
  x = g.linear("fc2", x, detail::scale_channels(128, opt.width));
  x = g.unary("relu2", OpKind::kReLU, x);
  detail::add_classifier(g, x, "dropout", "fc3", opt);
  return g;
}

}  // namespace nnopt
