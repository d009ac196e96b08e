// The QAT method registry: name -> weight / activation quantizer factories.
#include <map>

#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/quant/apot.h"
#include "nnopt/quant/dorefa.h"
#include "nnopt/quant/lsq.h"
#include "nnopt/quant/lsq_plus.h"
#include "nnopt/quant/pact.h"
#include "nnopt/quant/qat.h"

namespace nnopt {

namespace {
struct Registry {
  std::vector<std::string> order;
  std::map<std::string, QatMethod> methods;
};


Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry();
    auto add = [reg](const std::string& n, QatMethod m) {
      reg->order.push_back(n);
      reg->methods[n] = std::move(m);
    };
    add("dorefa", {make_dorefa_quantizer, nullptr});  // activations keep the calibrated FakeQuant
    add("pact", {make_dorefa_quantizer, make_pact_quantizer});
    add("lsq", {make_lsq_quantizer, make_lsq_quantizer});
    add("lsq+", {make_lsq_plus_quantizer, make_lsq_plus_quantizer});
    add("apot", {make_apot_quantizer, make_apot_quantizer});
    return reg;
  }();
  return *r;
}
}  // namespace

std::vector<std::string> qat_method_names() { return registry().order; }

const QatMethod& qat_method(const std::string& name) {
  auto& r = registry();
  auto it = r.methods.find(name);
  NNOPT_CHECK(it != r.methods.end(), ValueError, "unknown QAT method '", name, "' (known: ",
              join(r.order), ")");
  return it->second;
}

void register_qat_method(const std::string& name, QatMethod method) {
  auto& r = registry();
  NNOPT_CHECK(!name.empty(), ValueError, "register_qat_method: empty name");
  NNOPT_CHECK(!r.methods.count(name), ValueError, "QAT method '", name,
              "' is already registered (known: ", join(r.order), ")");
  NNOPT_CHECK(method.weight, ValueError, "QAT method '", name, "' needs a weight quantizer factory");
  r.order.push_back(name);
  r.methods[name] = std::move(method);
}

}  // namespace nnopt
