// nnopt compare ...: every method of a family under one protocol, one table.
// `compare` is a parent command; each family adds its subcommand here
// (distill now; quant and prune register theirs the same way).
#include <iostream>

#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/data/dataset.h"
#include "nnopt/distill/compare.h"

namespace nnopt::cli {

CLI::App* compare_command(CLI::App& app) {
  for (CLI::App* s : app.get_subcommands([](CLI::App*) { return true; }))
    if (s->get_name() == "compare") return s;
  CLI::App* sub = app.add_subcommand(
      "compare", "run every method of a family under one protocol and print the comparison table");
  sub->require_subcommand(1, 1);
  return sub;
}

std::vector<int64_t> parse_seeds(const std::string& s) {
  std::vector<int64_t> out;
  for (const auto& part : split(s, ',')) {
    char* end = nullptr;
    long long v = std::strtoll(part.c_str(), &end, 10);
    NNOPT_CHECK(!part.empty() && end == part.c_str() + part.size() && v >= 0, ValueError,
                "--seeds: '", s, "' is not a list of non-negative integers like 0,1,2");
    out.push_back(v);
  }
  return out;
}

void register_compare_distill(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static TrainOptions t;
  static DistillCompareOptions o;
  static std::string milestones, ensemble, methods, pairs, seeds = "0,1,2";
  static int64_t val_size = 0;
  auto* sub = compare_command(app)->add_subcommand(
      "distill", "student alone vs KD, label-free KD, hint, AT, SP and an ensemble teacher, "
                 "several seeds (mean ± std)");
  add_common(sub, c);
  add_data(sub, d);
  sub->add_option("--teacher", o.teacher(), "teacher checkpoint (.nnopt or TorchScript .pt)")->required();
  sub->add_option("--ensemble", ensemble, "checkpoints of the ensemble teacher, comma-separated");
  sub->add_option("--ensemble-mode", o.ensemble_mode(), "logits or probs (default probs)")
      ->check(CLI::IsMember({"logits", "probs"}));
  sub->add_option("--student", o.student(), "zoo model name or checkpoint (default lenet5)");
  sub->add_option("--width", o.width(), "width multiplier of a zoo student")->check(CLI::PositiveNumber);
  sub->add_option("--depth", o.depth(), "resnet depth of a zoo student")->check(CLI::PositiveNumber);
  sub->add_option("--methods", methods,
                  "comma-separated subset of alone,kd,kd-nolabel,hint,at,sp,ensemble (default all)");
  sub->add_option("--kd", o.kd(), "KD spec (default kd:T=4,alpha=0.9)");
  sub->add_option("--pairs", pairs,
                  "teacher_tap:student_tap pairs for hint/at/sp, comma-separated (default: the "
                  "last feature map of each)");
  sub->add_option("--seeds", seeds, "seeds, comma-separated (default 0,1,2)");
  add_train_options(sub, t, milestones, val_size);
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      NNOPT_CHECK(val_size == 0, ValueError, "compare distill: --val-size is not used (runs report test accuracy)");
      if (c.out.empty()) c.out = "runs/compare-distill";
      if (!milestones.empty()) t.milestones(parse_shape(milestones, "--milestones"));
      t.progress(c.progress);
      o.train(t).out_dir(c.out).seeds(parse_seeds(seeds));
      o.methods(split_list(methods)).pairs(split_list(pairs)).ensemble(split_list(ensemble));
      o.validate();  // before any data is read
      DatasetOptions dso = dataset_options(d);
      Dataset train = load_dataset(dso, true);
      Dataset test = load_dataset(dso, false);
      DistillCompareResult r = compare_distill(o, train, test);
      emit(c,
           str_cat(r.table.to_text(), "(* best mean; test accuracy over seeds ", seeds,
                   "; table also in ", c.out, "/compare.{txt,csv,json})\n"),
           r.json.dump());
      return 0;
    };
  });
}

}  // namespace nnopt::cli
