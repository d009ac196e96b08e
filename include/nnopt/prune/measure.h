#pragma once
// Measuring a pruned model against its original: the pieces `nnopt prune`,
// `nnopt prune search` and `nnopt compare prune` share.
//
// Latency is timed in alternating rounds (model A, model B, ..., then again),
// and each model's median over the rounds is reported, so that a change of
// load on the (shared) machine hits every model alike and the speed-up of one
// over another stays meaningful.
//
// Example:
//   auto ms = nnopt::alternating_latency({&orig, &small}, 64, 3, 20);  // {orig ms, small ms}
//   nlohmann::json lat = nnopt::latency_vs_reference({&orig, &small}, {1, 64}, 3, 20);
#include <functional>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/prune/criterion.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

/// Median latency in ms of each model (eval mode, random input of its input
/// shape, `batch` samples) over `rounds` alternating rounds of `repeats`
/// timed runs each (after 5 warm-up runs, at most 10 s per measurement).
/// ValueError for no models, rounds < 1 or repeats < 3.
std::vector<double> alternating_latency(const std::vector<GraphModule*>& models, int64_t batch, int64_t rounds,
                                        int64_t repeats);

/// alternating_latency at each batch size; models[0] is the reference:
/// {"b1": {"ms": [m0, m1, ...], "speedup": [1, m0/m1, ...]}, "b64": ...}.
nlohmann::json latency_vs_reference(const std::vector<GraphModule*>& models, const std::vector<int64_t>& batches,
                                    int64_t rounds, int64_t repeats);

/// latency_vs_reference of the models as deployed: batch norm folded into the
/// convs and, at each batch size, every conv on its faster kernel and the
/// faster thread count (tune_deployment in deploy/conv_tuning.h). The models
/// themselves are not changed.
nlohmann::json deployed_latency_vs_reference(const std::vector<GraphModule*>& models,
                                             const std::vector<int64_t>& batches, int64_t rounds, int64_t repeats);

/// The fine-tuning recipe of the pruning commands: one epoch of SGD, lr 0.01
/// with Nesterov momentum, weight decay 5e-4, cosine schedule.
TrainOptions prune_finetune_recipe();

/// The first `batches` batches of 64 samples of a seeded shuffle of `train`:
/// the data of the data-driven criteria (taylor, hrank).
ImportanceData importance_batches(const Dataset& train, int64_t batches, uint64_t seed);

/// ValueError unless `seeds` is non-empty, non-negative and without repeats
/// ("<who>: seed 1 is given twice").
void check_seed_list(const std::vector<int64_t>& seeds, const std::string& who);

/// Fine-tunes a pruned model: `epochs` of `recipe` with `seed`, checkpoints in
/// `dir` (an interrupted run resumes from them); nothing for epochs <= 0.
/// `callbacks` join the Trainer (e.g. a teacher from make_distill_callback).
/// Returns the seconds spent; leaves the model in eval mode.
double finetune_pruned(GraphModule& m, const TrainOptions& recipe, int64_t epochs, uint64_t seed,
                       const std::string& dir, const std::string& progress, const Dataset& train,
                       const std::vector<CallbackPtr>& callbacks = {});

/// Model i (>= 1) of a latency_vs_reference result as fields:
/// {"latency_ms_b1", "speedup_b1", "latency_ms_b64", "speedup_b64"} (for each batch measured).
/// With a prefix: {"<prefix>latency_ms_b1", "<prefix>speedup_b1", ...}.
nlohmann::json latency_fields(const nlohmann::json& lat, size_t i, const std::string& prefix = "");

/// One line of progress (nnopt prune search, nnopt compare prune).
using LineLog = std::function<void(const std::string&)>;

/// "48.25 %" (v = 0.4825).
std::string percent(double v, int digits = 2);

}  // namespace nnopt
