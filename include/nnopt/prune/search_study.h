#pragma once
// prune_search_study: ABCPruner's channel-number search (prune/structure_search.h,
// Lin et al. 2020, "Channel Pruning via Automatic Structure Search") on real
// data, optionally against a uniform per-layer ratio at the same MACs
// (nnopt prune search).
//
// Per seed:
//   1. score the pretrained model's channels with `criterion` (default l1);
//   2. hold out `val_size` training images (split_validation with the seed)
//      and take `fitness_limit` of the rest for the fitness fine-tunes;
//   3. run the bee colony under the MAC budget (1 - macs of the model's MACs)
//      and, if asked, a latency budget: at every batch of latency_batches, a
//      ConvLatencyTable (prune/latency_table.h: per-conv timings on the
//      faster kernel, BN folded) predicts each candidate's latency, which must
//      be at most max_latency_ms and/or at most the unpruned model's predicted
//      latency / min_speedup. The tables are timed once per study and kept in
//      DIR/latency_b<B>/result.json, so seeds and resumed runs share them;
//      the fitness of a candidate is its validation accuracy after
//      `fitness_epochs` of fine-tuning on the fitness images, starting from
//      the pretrained filters it keeps (the paper's fitness). Fitness values
//      are memoised by plan and appended to fitness.jsonl, so a structure the
//      colony meets again is not retrained, and an interrupted search replays
//      to where it stopped (the colony's choices depend only on the seed and
//      the fitness values);
//   4. fine-tune the winner for `finetune_epochs` on the whole training split
//      (the `train` recipe) and measure test accuracy, parameters, MACs and
//      latency at batch 1 and 64 (alternating with the unpruned model), both
//      as trained and as deployed (BN folded, convs on their faster kernels;
//      the "deployed_" fields), with latency_threads threads;
//   5. with compare_uniform: cut the same fraction of every group (global
//      ranking off, the same criterion) to the smallest level whose MACs are
//      at most the winner's, fine-tune it with the same recipe and seed, and
//      time it in the same alternating rounds.
// Each seed is one Study run DIR/seed<k>/ (result.json when finished; the
// winner in DIR/seed<k>/search/model.nnopt, the uniform model in
// DIR/seed<k>/uniform/model.nnopt; fine-tunes resume from their checkpoints).
// DIR/study.json holds the protocol (everything but the seeds); another
// protocol in the same folder is refused. DIR/search.json gathers the seeds:
// per-seed rows and mean ± std of search, uniform and (search - uniform).
//
// Example:
//   nnopt::PruneSearchStudyOptions o;
//   o.checkpoint("runs/r20/model.nnopt").out_dir("runs/search").macs(0.5).seeds({0, 1, 2})
//    .compare_uniform(true).fitness_limit(5000);
//   o.search().colony(6).cycles(3);
//   nnopt::PruneSearchStudyResult r = nnopt::prune_search_study(o, train, test);
//   std::cout << r.text;
#include <torch/arg.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nnopt/core/table.h"
#include "nnopt/data/dataset.h"
#include "nnopt/prune/measure.h"
#include "nnopt/prune/structure_search.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

using SeedList = std::vector<int64_t>;

struct PruneSearchStudyOptions {
  /// The pretrained checkpoint (.nnopt).
  TORCH_ARG(std::string, checkpoint);
  /// The study folder.
  TORCH_ARG(std::string, out_dir);
  /// Fraction of the model's MACs to remove, in (0, 1); default 0.5
  /// (the meaning of `nnopt prune --target macs=0.5`). 0 = no MAC budget
  /// (then a latency budget must be given).
  TORCH_ARG(double, macs) = 0.5;
  /// Latency budget: predicted speed-up over the unpruned model at every
  /// batch of latency_batches at least this (> 1); 0 = none.
  TORCH_ARG(double, min_speedup) = 0;
  /// Latency budget: predicted ms per forward pass at every batch of
  /// latency_batches at most this; 0 = none.
  TORCH_ARG(double, max_latency_ms) = 0;
  /// Batch sizes the latency budgets apply at; default {1, 64}.
  TORCH_ARG(SeedList, latency_batches) = SeedList({1, 64});
  /// Threads of the latency tables and of the final latency measurement (the
  /// deployment's threads; training uses the run's threads); 0 = the run's.
  TORCH_ARG(int64_t, latency_threads) = 0;
  /// Criterion that picks the channels a structure keeps in each group; default l1.
  TORCH_ARG(std::string, criterion) = "l1";
  /// Batches of 64 training images for data-driven criteria (taylor, hrank); default 4.
  TORCH_ARG(int64_t, importance_batches) = 4;
  /// The colony: colony, cycles, limit, levels, mutations (max_macs_ratio and
  /// seed are set from macs and each seed).
  TORCH_ARG(StructureSearchOptions, search) = StructureSearchOptions();
  /// Fine-tuning epochs of each fitness evaluation (>= 1); default 1.
  TORCH_ARG(int64_t, fitness_epochs) = 1;
  /// Training images of each fitness fine-tune (0 = all but the validation images); default 5000.
  TORCH_ARG(int64_t, fitness_limit) = 5000;
  /// Training images held out to measure the fitness (>= 1); default 2000.
  TORCH_ARG(int64_t, val_size) = 2000;
  /// Fine-tuning epochs of the winner (and of the uniform model), >= 0; default 2.
  TORCH_ARG(int64_t, finetune_epochs) = 2;
  /// The recipe of every fine-tune (epochs, seed, out_dir, resume and
  /// progress are set per use).
  TORCH_ARG(TrainOptions, train) = prune_finetune_recipe();
  /// A distillation loss spec (distill/distill_loss.h, e.g. "kd:T=4,alpha=0.9"):
  /// the final fine-tunes (winner, uniform model) are taught by the unpruned
  /// model with it; the short fitness fine-tunes are not. Empty (default) = labels only.
  TORCH_ARG(std::string, distill);
  /// One search per seed (colony, data split and fine-tune order); default 0.
  TORCH_ARG(SeedList, seeds) = SeedList{0};
  /// Also prune with a uniform per-group ratio at about the winner's MACs.
  TORCH_ARG(bool, compare_uniform) = false;
  /// Latency: alternating rounds and timed runs per measurement; default 3 and 20.
  TORCH_ARG(int64_t, latency_rounds) = 3;
  TORCH_ARG(int64_t, latency_repeats) = 20;
  /// Progress of the final fine-tunes ("off", "lines", ...); fitness fine-tunes are quiet.
  TORCH_ARG(std::string, progress) = "off";

 public:
  /// ValueError naming the option and its value (macs outside (0, 1),
  /// unknown criterion, colony < 2, no or repeated seeds, ...).
  void validate() const;
  bool has_latency_budget() const { return min_speedup_ > 0 || max_latency_ms_ > 0; }
};

struct PruneSearchStudyResult {
  Table table{{"seed"}};
  std::string text;     ///< title, table, summary (also DIR/search.txt)
  nlohmann::json json;  ///< protocol, unpruned reference, per-seed results, summary (DIR/search.json)
};

/// Runs (or resumes) the study (`log` gets a line per fitness evaluation and phase); writes DIR/search.{txt,csv,json}. ValueError
/// if the checkpoint does not take the dataset's samples or the smallest
/// structure (level 1 of `levels` in every group) keeps more MACs than the
/// target allows.
PruneSearchStudyResult prune_search_study(const PruneSearchStudyOptions& options, const Dataset& train,
                                          const Dataset& test, const LineLog& log = nullptr);

}  // namespace nnopt
