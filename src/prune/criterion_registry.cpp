// The importance registry, the shared helpers, and ImportanceData.
#include <limits>
#include <map>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/prune/criterion.h"

namespace nnopt {

ImportanceData ImportanceData::from_dataset(const Dataset& d, int64_t batches, int64_t batch_size) {
  NNOPT_CHECK(batches >= 1, ValueError, "importance data: batches must be >= 1, got ", batches);
  NNOPT_CHECK(batch_size >= 1, ValueError, "importance data: batch_size must be >= 1, got ", batch_size);
  NNOPT_CHECK(d.size() > 0, ValueError, "importance data: the dataset is empty");
  ImportanceData out;
  for (int64_t b = 0; b < batches && b * batch_size < d.size(); ++b) {
    int64_t end = std::min(d.size(), (b + 1) * batch_size);
    out.inputs.push_back(d.images.slice(0, b * batch_size, end));
    out.labels.push_back(d.labels.slice(0, b * batch_size, end));
  }
  return out;
}

void Importance::require_data(const ImportanceData& data) const {
  NNOPT_CHECK(!data.empty(), ValueError, "criterion '", name(),
              "' needs data (a few batches of training samples)");
}

torch::Tensor mean_over_slices(const DependencyGroup& g, SliceRole role,
                               const std::function<torch::Tensor(const std::string&)>& layer_score) {
  std::map<std::string, torch::Tensor> cache;
  auto out = torch::full({g.size()}, std::numeric_limits<double>::infinity(), torch::kDouble);
  auto acc = out.accessor<double, 1>();
  for (int64_t u = 0; u < g.size(); ++u) {
    double sum = 0;
    int64_t n = 0;
    for (const auto& s : g.units[u].slices) {
      if (s.role != role) continue;
      auto it = cache.find(s.node);
      if (it == cache.end())
        it = cache.emplace(s.node, layer_score(s.node).to(torch::kDouble).contiguous()).first;
      sum += it->second.data_ptr<double>()[s.index];
      ++n;
    }
    if (n > 0) acc[u] = sum / n;
  }
  return out;
}

namespace {
struct Registry {
  std::vector<std::string> order;
  std::map<std::string, ImportanceFactory> factories;
};


template <typename T>
ImportanceFactory factory() {
  return [](const ImportanceOptions& o) { return std::make_shared<T>(o); };
}

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
    auto add = [reg](const std::string& n, ImportanceFactory f) {
      reg->order.push_back(n);
      reg->factories[n] = std::move(f);
    };
    add("l1", factory<L1Importance>());
    add("l2", factory<L2Importance>());
    add("fpgm", factory<FpgmImportance>());
    add("bn", factory<BnScaleImportance>());
    add("taylor", factory<TaylorImportance>());
    add("hrank", factory<HRankImportance>());
    add("random", factory<RandomImportance>());
    return reg;
  }();
  return *r;
}
}  // namespace

ImportancePtr make_importance(const std::string& name, const ImportanceOptions& options) {
  auto& r = registry();
  auto it = r.factories.find(name);
  NNOPT_CHECK(it != r.factories.end(), ValueError, "unknown pruning criterion '", name,
              "' (known: ", join(r.order), ")");
  options.validate();
  return it->second(options);
}

std::vector<std::string> importance_names() { return registry().order; }

void register_importance(const std::string& name, ImportanceFactory factory) {
  auto& r = registry();
  NNOPT_CHECK(!name.empty(), ValueError, "register_importance: empty name");
  NNOPT_CHECK(factory != nullptr, ValueError, "register_importance: no factory for '", name, "'");
  NNOPT_CHECK(!r.factories.count(name), ValueError, "pruning criterion '", name,
              "' is already registered (known: ", join(r.order), ")");
  r.order.push_back(name);
  r.factories[name] = std::move(factory);
}

}  // namespace nnopt
