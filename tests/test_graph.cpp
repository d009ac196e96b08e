#include "nnopt/core/error.h"
#include "nnopt/ir/graph.h"
#include "nnopt/nn/graph_module.h"
#include "test_util.h"

using namespace nnopt;

namespace {
// input -> conv(3x3, 8) -> bn -> relu -> [branch: conv 1x1] add -> gap -> flatten -> fc
Graph residual_graph() {
  Graph g;
  g.input("input", {3, 16, 16});
  g.conv2d("stem.conv", "input", 8, 3, 2, 1);
  g.batch_norm("stem.bn", "stem.conv");
  g.unary("stem.relu", OpKind::kReLU, "stem.bn");
  g.conv2d("block.conv", "stem.relu", 8, 3, 1, 1, 8);  // depthwise
  g.add_op("block.add", {"block.conv", "stem.relu"});
  g.concat("cat", {"block.add", "stem.relu"});
  g.unary("gap", OpKind::kGlobalAvgPool, "cat");
  g.flatten("flat", "gap");
  g.linear("fc", "flat", 5);
  return g;
}
}  // namespace

TEST(Graph, ShapesAndCounts) {
  Graph g = residual_graph();
  EXPECT_EQ(g.node("stem.conv").shape, (Shape{8, 8, 8}));
  EXPECT_EQ(g.node("cat").shape, (Shape{16, 8, 8}));
  EXPECT_EQ(g.output_shape(), (Shape{5}));
  // conv 8*3*3*3 = 216, bn 16, depthwise 8*1*3*3 = 72, fc 16*5+5 = 85
  EXPECT_EQ(node_params(g.node("stem.conv")), 216);
  EXPECT_EQ(node_params(g.node("stem.bn")), 16);
  EXPECT_EQ(node_params(g.node("block.conv")), 72);
  EXPECT_EQ(node_params(g.node("fc")), 85);
  EXPECT_EQ(g.num_params(), 216 + 16 + 72 + 85);
  // MACs: stem 8*8*8 * 3*3*3 = 13824; depthwise 8*8*8 * 1*3*3 = 4608; fc 80
  EXPECT_EQ(g.macs(), 13824 + 4608 + 80);
  GraphModule m(g);
  int64_t counted = 0;
  for (const auto& p : m->parameters()) counted += p.numel();
  EXPECT_EQ(counted, g.num_params());
  auto y = m->forward(torch::randn({4, 3, 16, 16}));
  EXPECT_EQ(y.sizes(), (std::vector<int64_t>{4, 5}));
}

TEST(Graph, JsonRoundTrip) {
  Graph g = residual_graph();
  g.dropout("drop", "fc", 0.25);
  Graph back = Graph::from_json(g.to_json());
  EXPECT_TRUE(back == g);
  EXPECT_EQ(back.to_json(), g.to_json());
  EXPECT_EQ(back.node("block.conv").as<Conv2dAttrs>().groups, 8);
  EXPECT_DOUBLE_EQ(back.node("drop").as<DropoutAttrs>().p, 0.25);
}

TEST(Graph, ValidationErrorsNameTheNode) {
  Graph g;
  g.input("input", {3, 8, 8});
  EXPECT_THROW_MSG(g.conv2d("c", "nope", 4, 3), GraphError, "unknown input 'nope'");
  EXPECT_THROW_MSG(g.input("input2", {1}), GraphError, "already has an input");
  g.conv2d("c", "input", 4, 3);
  EXPECT_THROW_MSG(g.conv2d("c", "input", 4, 3), GraphError, "duplicate node name 'c'");
  Conv2dAttrs bad;
  bad.in_channels = 5;
  bad.out_channels = 4;
  EXPECT_THROW_MSG(g.add("bad", OpKind::kConv2d, bad, {"input"}), GraphError,
                   "node 'bad' (conv2d): in_channels is 5 but the input has 3 channels");
  EXPECT_THROW_MSG(g.conv2d("g", "input", 4, 3, 1, 0, 2), GraphError, "groups 2 must divide");
  EXPECT_THROW_MSG(g.conv2d("big", "input", 4, 11), GraphError, "node 'big'");
  g.flatten("f", "c");
  EXPECT_THROW_MSG(g.linear("l", "f", 0), GraphError, "out_features must be > 0");
  g.conv2d("c2", "input", 2, 1);
  EXPECT_THROW_MSG(g.add_op("a", {"c", "c2"}), GraphError, "input shapes differ");
  EXPECT_THROW_MSG(g.add("a1", OpKind::kAdd, NoAttrs{}, {"c"}), GraphError, "takes 2 or more");
  EXPECT_THROW_MSG(g.dropout("d", "c", 1.5), GraphError, "p must be in [0, 1)");
  EXPECT_THROW_MSG(g.add("x", OpKind::kReLU, Conv2dAttrs{}, {"c"}), GraphError,
                   "attributes of the wrong type");
  EXPECT_THROW_MSG(op_from_name("gelu"), GraphError, "unknown op 'gelu' (known: input, conv2d");
}

TEST(Graph, JsonErrors) {
  EXPECT_THROW_MSG(Graph::from_json("{not json"), GraphError, "does not parse");
  EXPECT_THROW_MSG(Graph::from_json(R"({"nodes": []})"), GraphError, "nnopt.graph");
  const char* unknown_attr = R"({"format":"nnopt.graph","version":1,"nodes":[
      {"name":"input","op":"input","attrs":{"shape":[1,4,4]}},
      {"name":"r","op":"relu","inputs":["input"],"attrs":{"slope":1}}]})";
  EXPECT_THROW_MSG(Graph::from_json(unknown_attr), GraphError, "node 'r': unknown attribute 'slope'");
  const char* unknown_op = R"({"format":"nnopt.graph","version":1,"nodes":[
      {"name":"input","op":"input","attrs":{"shape":[1,4,4]}},
      {"name":"s","op":"sigmoid","inputs":["input"]}]})";
  EXPECT_THROW_MSG(Graph::from_json(unknown_op), GraphError, "unknown op 'sigmoid'");
  const char* wrong_type = R"({"format":"nnopt.graph","version":1,"nodes":[
      {"name":"input","op":"input","attrs":{"shape":[1,4,4]}},
      {"name":"c","op":"conv2d","inputs":["input"],"attrs":{"in_channels":"one"}}]})";
  EXPECT_THROW_MSG(Graph::from_json(wrong_type), GraphError, "'in_channels' has the wrong type");
}

TEST(GraphModule, NamesTapsAndTransforms) {
  Graph g = residual_graph();
  torch::manual_seed(0);
  GraphModule m(g);
  auto st = m->state();
  EXPECT_TRUE(st.count("stem.conv.weight"));
  EXPECT_TRUE(st.count("stem.bn.running_var"));
  EXPECT_TRUE(st.count("fc.bias"));
  m->eval();
  auto x = torch::randn({2, 3, 16, 16});
  TensorMap taps;
  auto y = m->forward(x, {"stem.relu", "gap"}, taps);
  ASSERT_EQ(taps.size(), 2u);
  EXPECT_EQ(taps["gap"].sizes(), (std::vector<int64_t>{2, 16, 1, 1}));
  EXPECT_GE(taps["stem.relu"].min().item<float>(), 0.0f);
  EXPECT_THROW_MSG(m->forward(x, {"nope"}, taps), GraphError, "no node named 'nope'");

  // A weight transform that zeroes the fc weight: output becomes the bias.
  struct Zero : TransformImpl {
    torch::Tensor forward(const torch::Tensor& w) override { return w * 0; }
  };
  m->set_weight_transform("fc", std::make_shared<Zero>());
  auto y0 = m->forward(x);
  EXPECT_TRUE(torch::allclose(y0, m->node_module("fc").bias.expand({2, 5})));
  m->set_weight_transform("fc", nullptr);
  EXPECT_TRUE(torch::allclose(m->forward(x), y));
  EXPECT_THROW_MSG(m->set_weight_transform("stem.relu", std::make_shared<Zero>()), GraphError,
                   "weight transforms apply to conv2d and linear only");

  // An activation transform with a learnable parameter shows up in parameters().
  struct Scale : TransformImpl {
    Scale() { s = register_parameter("scale", torch::ones({1})); }
    torch::Tensor forward(const torch::Tensor& x) override { return x * s; }
    torch::Tensor s;
  };
  auto sc = std::make_shared<Scale>();
  m->set_activation_transform("fc", sc);
  EXPECT_TRUE(m->state().count("fc.act_transform.scale"));
  sc->s.data().fill_(2.0);
  EXPECT_TRUE(torch::allclose(m->forward(x), 2 * y));
  EXPECT_THROW_MSG(m->forward(torch::randn({2, 1, 16, 16})), ValueError, "model input must be");
}
