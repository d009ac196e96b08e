// The observer registry: name -> factory.
#include <map>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/quant/observer.h"

namespace nnopt {

namespace {
struct Registry {
  std::vector<std::string> order;
  std::map<std::string, ObserverFactory> factories;
};


Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
    auto add = [reg](const std::string& n, ObserverFactory f) {
      reg->order.push_back(n);
      reg->factories[n] = std::move(f);
    };
    add("minmax", [](const QuantScheme& s, const ObserverOptions& o) {
      return std::make_shared<MinMaxObserver>(s, o);
    });
    add("moving_average", [](const QuantScheme& s, const ObserverOptions& o) {
      return std::make_shared<MovingAverageObserver>(s, o);
    });
    add("percentile", [](const QuantScheme& s, const ObserverOptions& o) {
      return std::make_shared<PercentileObserver>(s, o);
    });
    add("mse", [](const QuantScheme& s, const ObserverOptions& o) {
      return std::make_shared<MseObserver>(s, o);
    });
    add("kl", [](const QuantScheme& s, const ObserverOptions& o) {
      return std::make_shared<KlObserver>(s, o);
    });
    return reg;
  }();
  return *r;
}
}  // namespace

ObserverPtr make_observer(const std::string& name, const QuantScheme& scheme,
                          const ObserverOptions& options) {
  auto& r = registry();
  auto it = r.factories.find(name);
  NNOPT_CHECK(it != r.factories.end(), ValueError, "unknown observer '", name, "' (known: ",
              join(r.order), ")");
  return it->second(scheme, options);
}

std::vector<std::string> observer_names() { return registry().order; }

void register_observer(const std::string& name, ObserverFactory factory) {
  auto& r = registry();
  NNOPT_CHECK(!name.empty(), ValueError, "register_observer: empty name");
  NNOPT_CHECK(factory != nullptr, ValueError, "register_observer: no factory for '", name, "'");
  NNOPT_CHECK(!r.factories.count(name), ValueError, "observer '", name,
              "' is already registered (known: ", join(r.order), ")");
  r.order.push_back(name);
  r.factories[name] = std::move(factory);
}

}  // namespace nnopt
