// Alternating latency and importance batches; see measure.h.
#include "nnopt/prune/measure.h"

#include <algorithm>

#include "nnopt/core/error.h"
#include "nnopt/core/table.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/nn/fold_bn.h"

namespace nnopt {
using json = nlohmann::json;

std::vector<double> alternating_latency(const std::vector<GraphModule*>& models, int64_t batch, int64_t rounds,
                                        int64_t repeats) {
  NNOPT_CHECK(!models.empty(), ValueError, "latency: no models to time");
  NNOPT_CHECK(rounds >= 1, ValueError, "latency: rounds must be >= 1, got ", rounds);
  NNOPT_CHECK(repeats >= 3, ValueError, "latency: repeats must be >= 3, got ", repeats);
  const std::vector<int64_t> shape = (*models[0])->graph().input_shape();
  std::vector<ForwardFn> forwards;
  std::vector<bool> was_training;
  for (GraphModule* m : models) {
    NNOPT_CHECK((*m)->graph().input_shape() == shape, ValueError,
                "latency: models take different input shapes, cannot time them on one batch");
    was_training.push_back((*m)->is_training());
    (*m)->eval();
    forwards.push_back([m](const torch::Tensor& x) { (*m)->forward(x); });
  }
  LatencyOptions lo;
  lo.warmup = 5;
  lo.repeats = repeats;
  lo.max_seconds = 10;
  const std::vector<double> ms = alternating_forward_latency(forwards, shape, batch, rounds, lo);
  for (size_t i = 0; i < models.size(); ++i) (*models[i])->train(was_training[i]);
  return ms;
}

json latency_vs_reference(const std::vector<GraphModule*>& models, const std::vector<int64_t>& batches,
                          int64_t rounds, int64_t repeats) {
  json out = json::object();
  for (int64_t b : batches) {
    std::vector<double> ms = alternating_latency(models, b, rounds, repeats);
    std::vector<double> speedup;
    for (double m : ms) speedup.push_back(m > 0 ? ms[0] / m : 0.0);
    out[str_cat("b", b)] = {{"ms", ms}, {"speedup", speedup}};
  }
  return out;
}

json deployed_latency_vs_reference(const std::vector<GraphModule*>& models, const std::vector<int64_t>& batches,
                                   int64_t rounds, int64_t repeats) {
  std::vector<GraphModule> folded;
  for (GraphModule* m : models) {
    (*m)->eval();
    folded.push_back(fold_batch_norm(*m));
    folded.back()->eval();
  }
  std::vector<GraphModule*> ptrs;
  for (auto& f : folded) ptrs.push_back(&f);
  json out = json::object();
  for (int64_t b : batches) {
    for (auto& f : folded) tune_deployment(f, b);
    out.update(latency_vs_reference(ptrs, {b}, rounds, repeats));
  }
  return out;
}

TrainOptions prune_finetune_recipe() {
  return TrainOptions(1).lr(0.01).nesterov(true).weight_decay(5e-4).schedule("cosine");
}

ImportanceData importance_batches(const Dataset& train, int64_t batches, uint64_t seed) {
  NNOPT_CHECK(batches >= 1, ValueError, "importance data: batches must be >= 1, got ", batches);
  const int64_t n = std::min(train.size(), batches * 64);
  return ImportanceData::from_dataset(train.subset(random_permutation(train.size(), seed).slice(0, 0, n)), batches,
                                      64);
}

void check_seed_list(const std::vector<int64_t>& seeds, const std::string& who) {
  NNOPT_CHECK(!seeds.empty(), ValueError, who, ": no seeds given (--seeds 0,1,2)");
  for (size_t i = 0; i < seeds.size(); ++i) {
    NNOPT_CHECK(seeds[i] >= 0, ValueError, who, ": seeds must be >= 0, got ", seeds[i]);
    for (size_t k = 0; k < i; ++k)
      NNOPT_CHECK(seeds[k] != seeds[i], ValueError, who, ": seed ", seeds[i], " is given twice");
  }
}

double finetune_pruned(GraphModule& m, const TrainOptions& recipe, int64_t epochs, uint64_t seed,
                       const std::string& dir, const std::string& progress, const Dataset& train,
                       const std::vector<CallbackPtr>& callbacks) {
  if (epochs <= 0) {
    m->eval();
    return 0;
  }
  TrainOptions o = recipe;
  o.epochs(epochs).seed(seed).out_dir(dir).resume(true).progress(progress);
  Trainer tr(m, o);
  for (const auto& cb : callbacks) tr.add_callback(cb);
  const double secs = tr.fit(train).seconds;
  m->eval();
  return secs;
}

json latency_fields(const json& lat, size_t i, const std::string& prefix) {
  json j = json::object();
  for (auto it = lat.begin(); it != lat.end(); ++it) {
    j[prefix + "latency_ms_" + it.key()] = it.value().at("ms").at(i);
    j[prefix + "speedup_" + it.key()] = it.value().at("speedup").at(i);
  }
  return j;
}

std::string percent(double v, int digits) { return fmt(100 * v, digits) + " %"; }

}  // namespace nnopt
