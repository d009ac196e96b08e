#include <gtest/gtest.h>

#include "nnopt/core/error.h"
#include "nnopt/ir/graph.h"
#include "nnopt/nn/graph_module.h"

using namespace nnopt;

TEST(Graph, SmokeShapes) {
  Graph g;
  g.input("x", {1, 28, 28});
  g.conv2d("conv1", "x", 8, 3, 1, 1);
  g.batch_norm("bn1", "conv1");
  g.unary("relu1", OpKind::kReLU, "bn1");
  g.flatten("flat", "relu1");
  g.linear("fc", "flat", 10);
  EXPECT_EQ(g.output_shape(), (Shape{10}));
  GraphModule m(g);
  auto y = m->forward(torch::randn({2, 1, 28, 28}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{2, 10}));
}
