// nnopt compare prune: every channel criterion at every MAC reduction under
// one protocol, one table (prune/compare.h).
#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/strings.h"
#include "nnopt/data/dataset.h"
#include "nnopt/prune/compare.h"

namespace nnopt::cli {

void register_compare_prune(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static PruneCompareOptions o;
  static TrainOptions t = prune_finetune_recipe();
  static std::string criteria, macs = "0.3,0.5,0.7", seeds = "0";
  static bool per_layer = false;
  auto* sub = compare_command(app)->add_subcommand(
      "prune", "every channel criterion at each MAC reduction under one protocol: accuracy drop, parameters, "
               "MACs, measured latency and speed-up at batch 1 and 64");
  add_common(sub, c);
  add_data(sub, d);
  sub->add_option("checkpoint", o.checkpoint(), "nnopt checkpoint to prune")->required();
  sub->add_option("--criteria", criteria,
                  "comma-separated subset of l1,l2,fpgm,bn,taylor,hrank,random (default all)");
  sub->add_option("--macs", macs, "MAC reductions (fractions REMOVED), comma-separated (default 0.3,0.5,0.7)");
  sub->add_option("--finetune-epochs", o.finetune_epochs(), "fine-tune epochs after pruning (default 1; 0 = none)");
  sub->add_option("--seeds", seeds, "seeds, comma-separated (default 0)");
  sub->add_flag("--per-layer", per_layer, "cut the same fraction of every group (default: global ranking)");
  sub->add_option("--max-group-ratio", o.max_group_ratio(), "at most this fraction of a group is removed (0.9)");
  add_prune_study_options(sub, o.importance_batches(), o.latency_rounds(), o.latency_repeats(), t);
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      if (c.out.empty()) c.out = "runs/compare-prune";
      o.criteria(split_list(criteria)).macs(parse_mac_reductions(macs)).seeds(parse_seeds(seeds));
      o.global(!per_layer).train(t).out_dir(c.out).progress(c.progress);
      o.validate();  // before any data is read
      DatasetOptions dso = dataset_options(d);
      Dataset train = load_dataset(dso, true);
      Dataset test = load_dataset(dso, false);
      PruneCompareResult r = compare_prune(o, train, test, progress_lines(c));
      emit(c, str_cat(r.text, "(table also in ", c.out, "/compare.{txt,csv,json})\n"), r.json.dump());
      return 0;
    };
  });
}

}  // namespace nnopt::cli
