// nnopt prune search: ABCPruner channel-number search on real data, optionally
// against a uniform per-layer ratio at the same MACs (prune/search_study.h).
#include <cmath>
#include <cstdlib>
#include <iostream>

#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/data/dataset.h"
#include "nnopt/prune/search_study.h"
#include "nnopt/prune/target.h"

namespace nnopt::cli {

void add_prune_study_options(CLI::App* sub, int64_t& importance_batches, int64_t& latency_rounds,
                             int64_t& latency_repeats, TrainOptions& t) {
  sub->add_option("--importance-batches", importance_batches, "batches of 64 images for taylor and hrank");
  sub->add_option("--latency-rounds", latency_rounds, "alternating rounds of the latency timing (default 3)");
  sub->add_option("--latency-repeats", latency_repeats, "timed runs per latency measurement (default 20)");
  add_finetune_options(sub, t);
}

std::function<void(const std::string&)> progress_lines(const Common& c) {
  const bool quiet = c.progress == "off";
  return [quiet](const std::string& line) {
    if (!quiet) std::cerr << line << std::endl;
  };
}

void add_finetune_options(CLI::App* sub, TrainOptions& t) {
  sub->add_option("--lr", t.lr(), "fine-tuning peak learning rate")->check(CLI::PositiveNumber);
  sub->add_option("--batch-size", t.batch_size(), "mini-batch size")->check(CLI::PositiveNumber);
  sub->add_option("--weight-decay", t.weight_decay(), "weight decay")->check(CLI::NonNegativeNumber);
  sub->add_option("--crop-padding", t.crop_padding(), "random crop after padding (0 = off)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--hflip", t.hflip(), "random horizontal flips");
  sub->add_option("--max-batches", t.max_batches(), "batches per epoch at most (0 = all)")
      ->check(CLI::NonNegativeNumber);
}

void register_prune_search(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static PruneSearchStudyOptions o;
  static TrainOptions t = prune_finetune_recipe();
  static StructureSearchOptions s = StructureSearchOptions().colony(8).cycles(5).limit(3).levels(10);
  static std::string target, seeds = "0", latency_batches = "1,64";
  CLI::App* prune = nullptr;
  for (CLI::App* p : app.get_subcommands([](CLI::App*) { return true; }))
    if (p->get_name() == "prune") prune = p;
  NNOPT_CHECK(prune != nullptr, ValueError, "register_prune_search: register `prune` first");
  auto* sub = prune->add_subcommand(
      "search", "ABCPruner channel-number search under a MAC and/or latency budget (fitness: accuracy after a "
                "short fine-tune), the winner fine-tuned and measured; optionally vs a uniform ratio, several seeds");
  add_common(sub, c);
  add_data(sub, d);
  sub->add_option("checkpoint", o.checkpoint(), "nnopt checkpoint to prune")->required();
  sub->add_option("--target", target,
                  "budgets, comma-separated: macs=F (fraction of MACs to remove, in (0, 1)), latency=MS "
                  "(predicted ms per forward pass), speedup=S (predicted speed-up > 1); latency budgets hold at "
                  "every --latency-batch")
      ->required();
  sub->add_option("--latency-threads", o.latency_threads(),
                  "threads of the latency tables and the final timing (default: --threads)");
  sub->add_option("--latency-batch", latency_batches,
                  "batch sizes the latency budgets hold at, comma-separated (default 1,64)");
  sub->add_option("--criterion", o.criterion(),
                  "which channels a structure keeps: l1 (default), l2, fpgm, bn, taylor, hrank, random");
  sub->add_option("--colony", s.colony(), "food sources of the bee colony (default 8)");
  sub->add_option("--cycles", s.cycles(), "colony cycles (default 5)");
  sub->add_option("--scout-limit", s.limit(),
                  "ABC limit: tries without improvement before a scout replaces a source (default 3; "
                  "--limit is the data limit)");
  sub->add_option("--levels", s.levels(), "channel-count levels per group: k/levels kept (default 10)");
  sub->add_option("--mutations", s.mutations(), "groups changed per neighbour (default 2)");
  sub->add_flag("--remove-blocks", s.remove_blocks(),
                "block pruning: a residual branch's inner width may go to zero, removing the branch");
  sub->add_option("--fitness-epochs", o.fitness_epochs(), "fine-tune epochs of each fitness evaluation (default 1)");
  sub->add_option("--fitness-limit", o.fitness_limit(),
                  "training images of each fitness fine-tune (default 5000; 0 = all)");
  sub->add_option("--val-size", o.val_size(), "held-out training images the fitness is measured on (default 2000)");
  sub->add_option("--finetune-epochs", o.finetune_epochs(), "fine-tune epochs of the winner (default 2)");
  sub->add_option("--distill", o.distill(),
                  "the unpruned model teaches the final fine-tunes with this loss (e.g. kd:T=4,alpha=0.9)");
  sub->add_option("--seeds", seeds, "one search per seed, comma-separated (default 0)");
  sub->add_flag("--compare-uniform", o.compare_uniform(),
                "also prune the same fraction of every group to the winner's MACs, same fine-tune");
  add_prune_study_options(sub, o.importance_batches(), o.latency_rounds(), o.latency_repeats(), t);
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      if (c.out.empty()) c.out = "runs/prune-search";
      o.macs(0).min_speedup(0).max_latency_ms(0);
      for (const std::string& item : split(target, ',')) {
        const auto eq = item.find('=');
        const std::string kind = item.substr(0, eq);
        if (eq != std::string::npos && kind == "speedup") {
          const std::string v = item.substr(eq + 1);
          char* end = nullptr;
          const double x = std::strtod(v.c_str(), &end);
          NNOPT_CHECK(!v.empty() && end == v.c_str() + v.size() && std::isfinite(x), ValueError, "prune search: --target ",
                      item, ": '", v, "' is not a number");
          o.min_speedup(x);
          continue;
        }
        PruneTarget pt = PruneTarget::parse(item);
        if (pt.kind == TargetKind::kMacs)
          o.macs(pt.value);
        else if (pt.kind == TargetKind::kLatency)
          o.max_latency_ms(pt.value);
        else
          throw ValueError(str_cat("prune search: --target ", item,
                                   " is not supported; give macs=F, latency=MS and/or speedup=S"));
      }
      o.latency_batches(parse_shape(latency_batches, "--latency-batch"));
      o.search(s).train(t).seeds(parse_seeds(seeds)).out_dir(c.out).progress(c.progress);
      o.validate();  // before any data is read
      DatasetOptions dso = dataset_options(d);
      Dataset train = load_dataset(dso, true);
      Dataset test = load_dataset(dso, false);
      PruneSearchStudyResult r = prune_search_study(o, train, test, progress_lines(c));
      emit(c, str_cat(r.text, "(also in ", c.out, "/search.{txt,csv,json}; models in ", c.out,
                      "/seed<k>/search/model.nnopt)\n"),
           r.json.dump());
      return 0;
    };
  });
}

}  // namespace nnopt::cli
