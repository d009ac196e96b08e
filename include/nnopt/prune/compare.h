#pragma once
// compare_prune: every channel criterion at every MAC reduction under one
// protocol, one table (nnopt compare prune). All runs start from the same
// checkpoint and differ only in the criterion and the reduction:
//   score the channels (data-driven criteria on the same seeded batches),
//   plan with the same planner (global ranking by default, at most
//   max_group_ratio of a group), remove the channels physically, fine-tune
//   with the same recipe, data and seed, evaluate on the test split, and time
//   the pruned model at batch 1 and 64 in alternating rounds with the
//   unpruned one (the speed-up is the ratio of the two).
// A reduction R is the fraction of MACs REMOVED (as `nnopt prune --target
// macs=R`): 0.5 keeps about half of the MACs.
//
// Table: rows = criteria (the unpruned model first), columns per reduction:
// test accuracy % (drop vs unpruned in points), parameters, MACs, latency at
// batch 1 and 64 in ms (speed-up). '*' marks the best cell of each column
// (highest accuracy, fewest parameters / MACs, highest speed-up; ties all
// marked). Several seeds give mean ± std of the accuracy (the other columns
// are means). A criterion that cannot reach a reduction (e.g. bn on a model
// without batch norm: every channel scores +inf) shows "n/a"; the JSON says why.
// Runs go through a Study (pipeline/study.h): DIR/study.json holds the
// protocol; run "<criterion>/macs<100R>/seed<k>" is finished when its
// result.json exists; fine-tunes resume from DIR/<run>/finetune/checkpoint.nnopt.
// Criteria, reductions and seeds are not part of the protocol: adding some
// later extends the same table. Writes DIR/compare.{txt,csv,json}.
//
// Example:
//   nnopt::PruneCompareOptions o;
//   o.checkpoint("runs/r20/model.nnopt").out_dir("runs/cmp-prune").criteria({"l1", "hrank"})
//    .macs({0.3, 0.5}).finetune_epochs(1);
//   nnopt::PruneCompareResult r = nnopt::compare_prune(o, train, test);
//   std::cout << r.text;
#include <torch/arg.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nnopt/core/table.h"
#include "nnopt/data/dataset.h"
#include "nnopt/prune/measure.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

using StringList = std::vector<std::string>;
using SeedList = std::vector<int64_t>;

/// "0.3,0.5,0.7" -> {0.3, 0.5, 0.7}: MAC reductions, each in (0, 1), no
/// repeats. ValueError naming `what` and the bad item.
std::vector<double> parse_mac_reductions(const std::string& s, const std::string& what = "--macs");

struct PruneCompareOptions {
  /// The checkpoint to prune (.nnopt).
  TORCH_ARG(std::string, checkpoint);
  /// The study folder.
  TORCH_ARG(std::string, out_dir);
  /// Criteria in table order; empty = every registered one (importance_names()).
  TORCH_ARG(StringList, criteria) = {};
  /// MAC reductions (fractions removed), in column order; default 0.3, 0.5, 0.7.
  TORCH_ARG(std::vector<double>, macs) = std::vector<double>{0.3, 0.5, 0.7};
  /// One run per criterion, reduction and seed; default 0.
  TORCH_ARG(SeedList, seeds) = SeedList{0};
  /// Fine-tune epochs after pruning (0 = none); default 1.
  TORCH_ARG(int64_t, finetune_epochs) = 1;
  /// The fine-tune recipe (epochs, seed, out_dir, resume, progress set per run).
  TORCH_ARG(TrainOptions, train) = prune_finetune_recipe();
  /// Planner: global ranking (default) or the same fraction of every group.
  TORCH_ARG(bool, global) = true;
  /// Planner: at most this fraction of a group is removed; default 0.9.
  TORCH_ARG(double, max_group_ratio) = 0.9;
  /// Batches of 64 training images for taylor and hrank; default 4.
  TORCH_ARG(int64_t, importance_batches) = 4;
  /// Latency: alternating rounds and timed runs per measurement; default 3 and 20.
  TORCH_ARG(int64_t, latency_rounds) = 3;
  TORCH_ARG(int64_t, latency_repeats) = 20;
  /// Progress of the fine-tunes ("off", "lines", ...).
  TORCH_ARG(std::string, progress) = "off";

 public:
  /// ValueError: no checkpoint or out_dir, unknown or repeated criterion
  /// (listing the known ones), a reduction outside (0, 1) or repeated, bad
  /// seeds, negative epochs, bad planner or latency options.
  void validate() const;
};

struct PruneCompareResult {
  Table table{{"criterion"}};
  std::string text;     ///< title + table + n/a notes (compare.txt)
  nlohmann::json json;  ///< protocol, unpruned reference, rows with per-cell results, best per column
};

/// Runs (or resumes) the study and builds the table; writes
/// out_dir/compare.{txt,csv,json}. ValueError if the checkpoint does not take
/// the dataset's samples. `log` gets one line per run started.
PruneCompareResult compare_prune(const PruneCompareOptions& options, const Dataset& train, const Dataset& test,
                                 const LineLog& log = nullptr);

}  // namespace nnopt
