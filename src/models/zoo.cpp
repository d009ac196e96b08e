// The model registry and the option checks shared by the family builders.
#include "nnopt/models/zoo.h"

#include <cmath>
#include <utility>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"

namespace nnopt {

namespace {

struct Registry {
  std::vector<std::pair<std::string, ModelBuilder>> entries;

  const ModelBuilder* find(const std::string& name) const {
    for (const auto& e : entries)
      if (e.first == name) return &e.second;
    return nullptr;
  }
};

ModelBuilder resnet_of_depth(int64_t depth) {
  return [depth](const ModelOptions& opt) {
    ModelOptions o = opt;
    o.depth = depth;
    return build_resnet(o);
  };
}

Registry& registry() {
  static Registry r{{
      {"mlp", build_mlp},
      {"lenet5", build_lenet5},
      {"vgg-small", build_vgg_small},
      {"resnet", build_resnet},
      {"resnet8", resnet_of_depth(8)},
      {"resnet14", resnet_of_depth(14)},
      {"resnet20", resnet_of_depth(20)},
      {"resnet32", resnet_of_depth(32)},
      {"resnet56", resnet_of_depth(56)},
      {"mobilenetv2", build_mobilenetv2},
  }};
  return r;
}


std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

Graph build_model(const std::string& name, const ModelOptions& opt) {
  const ModelBuilder* b = registry().find(name);
  NNOPT_CHECK(b, ValueError, "unknown model '", name, "'; known models: ", join(model_names()));
  try {
    return (*b)(opt);
  } catch (const GraphError& e) {
    // Builders check their options up front; this only catches what they missed.
    throw ValueError(str_cat("model '", name, "' does not fit input_shape ",
                             shape_str(opt.input_shape), ": ", e.what()));
  }
}

std::vector<std::string> model_names() {
  std::vector<std::string> names;
  for (const auto& e : registry().entries) names.push_back(e.first);
  return names;
}

void register_model(const std::string& name, ModelBuilder builder) {
  NNOPT_CHECK(!name.empty(), ValueError, "model name must not be empty");
  NNOPT_CHECK(builder, ValueError, "model '", name, "': builder must not be empty");
  NNOPT_CHECK(!registry().find(name), ValueError, "model '", name,
              "' is already registered; known models: ", join(model_names()));
  registry().entries.emplace_back(name, std::move(builder));
}

namespace detail {

int64_t scale_channels(int64_t channels, double width) {
  auto c = static_cast<int64_t>(static_cast<double>(channels) * width + 0.5);
  return c < 1 ? 1 : c;
}

int64_t make_divisible(double v, int64_t divisor) {
  // torchvision: max(divisor, int(v + divisor / 2) // divisor * divisor), plus
  // one divisor if that rounded down by more than 10%.
  int64_t n = static_cast<int64_t>(v + static_cast<double>(divisor) / 2.0) / divisor * divisor;
  if (n < divisor) n = divisor;
  if (static_cast<double>(n) < 0.9 * v) n += divisor;
  return n;
}

void check_options(const std::string& model, const ModelOptions& opt) {
  NNOPT_CHECK(opt.num_classes >= 2, ValueError, model, ": num_classes must be >= 2, got ",
              opt.num_classes);
  NNOPT_CHECK(std::isfinite(opt.width) && opt.width > 0, ValueError, model,
              ": width must be > 0, got ", opt.width);
  NNOPT_CHECK(opt.dropout >= 0 && opt.dropout < 1, ValueError, model,
              ": dropout must be in [0, 1), got ", opt.dropout);
  NNOPT_CHECK(!opt.input_shape.empty(), ValueError, model, ": input_shape must not be empty");
  for (auto d : opt.input_shape)
    NNOPT_CHECK(d > 0, ValueError, model, ": input_shape dimensions must be > 0, got ",
                shape_str(opt.input_shape));
}

void check_image_input(const std::string& model, const ModelOptions& opt, int64_t min_hw) {
  const auto& s = opt.input_shape;
  NNOPT_CHECK(s.size() == 3, ValueError, model, ": input_shape must be [C, H, W], got ",
              shape_str(s));
  NNOPT_CHECK(s[1] >= min_hw && s[2] >= min_hw, ValueError, model, ": input_shape ",
              shape_str(s), " is too small; H and W must be >= ", min_hw);
}

std::string add_classifier(Graph& g, const std::string& in,
                           const std::string& dropout_name, const std::string& fc_name,
                           const ModelOptions& opt) {
  std::string x = in;
  if (opt.dropout > 0) x = g.dropout(dropout_name, x, opt.dropout);
  return g.linear(fc_name, x, opt.num_classes, /*bias=*/true);
}

}  // namespace detail
}  // namespace nnopt
