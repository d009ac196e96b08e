// calibrate(): range setting of the attached quantizers from a few batches.
#include <map>

#include "nnopt/core/error.h"
#include "nnopt/quant/attach.h"
#include "nnopt/quant/ptq.h"  // take_batches

namespace nnopt {

namespace {
// Restores the module's training flag on scope exit (also on exceptions).
struct TrainingFlagGuard {
  GraphModule& m;
  bool was;
  explicit TrainingFlagGuard(GraphModule& model) : m(model), was(model->is_training()) {}
  ~TrainingFlagGuard() { m->train(was); }
};
}  // namespace

void calibrate(GraphModule& model, const std::vector<torch::Tensor>& batches) {
  NNOPT_CHECK(!batches.empty(), ValueError, "calibration needs at least 1 batch, got 0");
  auto qs = find_quantizers(model);
  NNOPT_CHECK(!qs.empty(), ValueError,
              "calibrate: the model has no quantizers (call attach_quantizers first)");
  TrainingFlagGuard guard(model);
  model->eval();
  torch::NoGradGuard ng;

  std::map<std::string, FakeQuantPtr> act_by_node;
  for (const auto& q : qs) {
    auto& fq = *q.fq;
    fq.set_quantizing(false);  // everything float during the pass
    if (q.weight) {
      NNOPT_CHECK(fq.observer() != nullptr, ValueError, "calibrate: the weight quantizer of '",
                  q.node, "' has no observer");
      fq.set_observing(false);
      fq.observer()->reset();
      fq.observer()->observe(model->weight_transform_input(q.node).detach());
      fq.update_qparams();
      continue;
    }
    act_by_node[q.node] = q.fq;
    if (!fq.follows().empty()) {
      fq.set_observing(false);
      continue;
    }
    NNOPT_CHECK(fq.observer() != nullptr, ValueError, "calibrate: the activation quantizer of '",
                q.node, "' has no observer");
    fq.observer()->reset();
    fq.set_observing(true);
  }
  for (const auto& b : batches) model->forward(b);

  for (const auto& q : qs) {
    if (q.weight || !q.fq->follows().empty()) continue;
    NNOPT_CHECK(!q.fq->observer()->empty(), ValueError, "calibrate: the activation of '", q.node,
                "' was never computed");
    q.fq->update_qparams();
    q.fq->set_observing(false);
  }
  for (const auto& q : qs) {
    if (q.weight || q.fq->follows().empty()) continue;
    auto it = act_by_node.find(q.fq->follows());
    NNOPT_CHECK(it != act_by_node.end(), ValueError, "calibrate: '", q.node, "' follows '",
                q.fq->follows(), "', which has no activation quantizer");
    NNOPT_CHECK(it->second->scheme() == q.fq->scheme(), ValueError, "calibrate: '", q.node,
                "' (", q.fq->scheme().describe(), ") follows '", q.fq->follows(), "' (",
                it->second->scheme().describe(), ") with a different scheme");
    q.fq->set_qparams(it->second->qparams());
  }
  for (const auto& q : qs) q.fq->set_quantizing(true);
}

void calibrate(GraphModule& model, const Dataset& data, int64_t num_batches,
               int64_t batch_size) {
  calibrate(model, take_batches(data, num_batches, batch_size));
}

}  // namespace nnopt
