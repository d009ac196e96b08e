#pragma once
// Shared pieces of the nnopt command line. The CLI is thin: it parses, calls
// the library, prints. Human output goes to stdout (or stderr with --json,
// where stdout carries one JSON document); progress and logs go to stderr.
#include <CLI/CLI.hpp>

#include <functional>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/train/trainer.h"

namespace nnopt {
struct QuantizeMethodOptions;
}

namespace nnopt::cli {

/// Options every subcommand takes.
struct Common {
  int threads = 0;            // 0 = core count
  uint64_t seed = 0;
  std::string out;            // output folder or file
  bool json = false;
  std::string progress = "auto";
  std::string config;         // JSON or YAML file with option values
};

/// The model a command works on: a checkpoint path or a zoo model name.
struct ModelSource {
  std::string checkpoint;
  std::string model;
  std::string input_shape;    // "1,28,28"; for zoo models
  int64_t num_classes = 10;
  double width = 1.0;
  int64_t depth = 20;
};

struct DataArgs {
  std::string dataset = "fashion-mnist";
  std::string data_dir;
  int64_t limit = 0;
};

void add_common(CLI::App* app, Common& c, bool with_out = true);
void add_data(CLI::App* app, DataArgs& d);
/// --dataset / --data-dir / --limit as DatasetOptions.
DatasetOptions dataset_options(const DataArgs& d);
void add_model_options(CLI::App* app, ModelSource& m);
/// The Trainer's options as flags (train, distill, and every command that trains).
void add_train_options(CLI::App* app, TrainOptions& t, std::string& milestones, int64_t& val_size);

/// The fine-tuning recipe flags of the pruning commands (--lr, --batch-size,
/// --weight-decay, --crop-padding, --hflip, --max-batches).
void add_finetune_options(CLI::App* app, TrainOptions& t);
/// --importance-batches, --latency-rounds, --latency-repeats and the recipe
/// flags: what `prune search` and `compare prune` share.
void add_prune_study_options(CLI::App* app, int64_t& importance_batches, int64_t& latency_rounds,
                             int64_t& latency_repeats, TrainOptions& t);
/// Prints each line to stderr unless --progress off.
/// The quantization-aware-training options that `nnopt quantize` and `nnopt
/// compare quant` share (one cell of a comparison is one quantize run).
struct QatArgs {
  int64_t epochs = 3, batch = 128, max_batches = 0, val_size = 0, freeze_bn_epoch = 0;
  double lr = 0.01, weight_decay = 5e-4;
  std::string schedule = "cosine";
  bool kd = false;
};
void add_qat_options(CLI::App* app, QatArgs& q);
/// Sets o's QAT fields (kd, val_size, freeze_bn_epoch, train recipe) from q.
void apply_qat_options(const QatArgs& q, const Common& c, QuantizeMethodOptions& o);

std::function<void(const std::string&)> progress_lines(const Common& c);
/// Parses "1,28,28" into a shape; throws ValueError naming `what`.
std::vector<int64_t> parse_shape(const std::string& s, const std::string& what);
/// Parses "0,1,2" into seeds; ValueError for anything but non-negative integers.
std::vector<int64_t> parse_seeds(const std::string& s);
/// Builds or loads the model. `meta` receives the checkpoint's metadata JSON.
GraphModule load_source(const ModelSource& m, std::string* meta = nullptr);
/// Applies --threads and --seed.
void apply_common(const Common& c);
/// Prints `human` to stdout, or `json` to stdout with --json (then human to nothing).
void emit(const Common& c, const std::string& human, const std::string& json);

// Subcommands: each registers itself and sets `run` when selected.
using Runner = std::function<int()>;
void register_train(CLI::App& app, Runner& run);
void register_eval(CLI::App& app, Runner& run);
void register_profile(CLI::App& app, Runner& run);
void register_export(CLI::App& app, Runner& run);
void register_import(CLI::App& app, Runner& run);
void register_demo(CLI::App& app, Runner& run);
void register_distill(CLI::App& app, Runner& run);
void register_prune(CLI::App& app, Runner& run);
void register_quantize(CLI::App& app, Runner& run);
/// The parent `nnopt compare` command (created on first use); families add
/// their subcommand to it: `nnopt compare distill|quant|prune`.
CLI::App* compare_command(CLI::App& app);
void register_compare_distill(CLI::App& app, Runner& run);
void register_compare_quant(CLI::App& app, Runner& run);
void register_compare_prune(CLI::App& app, Runner& run);
/// `nnopt prune search`: a subcommand of `nnopt prune` (register after register_prune).
void register_prune_search(CLI::App& app, Runner& run);

/// Rewrites argv so that values from `--config FILE` come first and flags
/// given on the command line override them. Throws ValueError for an unknown
/// key (naming it and the file) and FileError for an unreadable file.
std::vector<std::string> expand_config(CLI::App& app, const std::vector<std::string>& args);

}  // namespace nnopt::cli
