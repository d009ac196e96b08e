// nnopt distill: knowledge distillation from one teacher or an ensemble, or
// born-again generations, through the one Trainer (see nnopt/distill/).
#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/core/table.h"
#include "nnopt/data/dataset.h"
#include "nnopt/distill/born_again.h"
#include "nnopt/distill/distill_callback.h"
#include "nnopt/distill/teacher.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/train/trainer.h"

namespace nnopt::cli {
using json = nlohmann::json;

namespace {

std::string pct(double v) { return fmt(100 * v, 2) + " %"; }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Values of a repeatable option; each may also hold a comma-separated list
// (what --config makes of a YAML list).
std::vector<std::string> split_all(const std::vector<std::string>& values) {
  std::vector<std::string> out;
  for (const auto& v : values)
    for (auto& part : split_list(v)) out.push_back(std::move(part));
  return out;
}

// --loss specs plus the tap pairs of --hint/--at/--sp, which go to the loss of
// that name (added with default options when --loss does not name it).
std::vector<LossSpec> loss_specs(const std::vector<std::string>& loss_args,
                                 const std::vector<std::pair<std::string, std::vector<std::string>>>& taps) {
  std::vector<LossSpec> specs;
  for (const auto& text : loss_args) specs.push_back(parse_loss_spec(text));
  bool any_taps = false;
  for (const auto& [name, values] : taps) {
    auto pairs = split_all(values);
    if (pairs.empty()) continue;
    any_taps = true;
    auto it = std::find_if(specs.begin(), specs.end(), [&](const LossSpec& s) { return s.name == name; });
    if (it == specs.end()) it = specs.insert(specs.end(), LossSpec{name, {}, {}});
    for (const auto& p : pairs) it->taps.push_back(parse_tap_pair(p, "--" + name));
  }
  if (loss_args.empty() && !any_taps) specs.push_back(LossSpec{"kd", {}, {}});
  for (const auto& s : specs) make_distill_loss(s);  // unknown names, keys and values fail here
  return specs;
}

}  // namespace

void register_distill(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static TrainOptions t;
  static std::string teacher_arg, student_arg, ensemble = "logits", milestones;
  static std::vector<std::string> loss_args, hint_args, at_args, sp_args;
  static double ce_weight = -1, width = 1.0;
  static bool no_teacher_cache = false;
  static int64_t depth = 20, generations = 1, val_size = 0;
  auto* sub = app.add_subcommand(
      "distill", "train a student from a teacher (knowledge distillation, FitNets, AT, SP, born-again)");
  add_common(sub, c);
  add_data(sub, d);
  sub->add_option("--teacher", teacher_arg,
                  "teacher checkpoint(s), comma-separated: .nnopt files or TorchScript .pt files");
  sub->add_option("--ensemble", ensemble, "how several teachers combine: logits (mean logits) or "
                                          "probs (log of the mean probabilities)")
      ->check(CLI::IsMember({"logits", "probs"}));
  sub->add_option("--student", student_arg, "zoo model name or checkpoint to start from")->required();
  sub->add_option("--width", width, "width multiplier of a zoo student");
  sub->add_option("--depth", depth, "resnet depth of a zoo student");
  sub->add_option("--loss", loss_args,
                  "loss spec, repeatable: kd[:T=4,alpha=0.9], hint[:weight=1], "
                  "at[:beta=1000,p=2,form=code|paper], sp[:gamma=3000] (default kd)")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--hint", hint_args, "FitNets hint pair teacher_tap:student_tap, repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--at", at_args, "attention-transfer pair teacher_tap:student_tap, repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--sp", sp_args, "similarity-preserving pair teacher_tap:student_tap, repeatable")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  sub->add_option("--ce-weight", ce_weight,
                  "weight of the student's cross-entropy with the labels (default 1 - kd alpha; 0 = no labels)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--no-teacher-cache", no_teacher_cache,
               "run the teacher every step (default: without augmentation and feature taps, its "
               "logits are computed once per sample and reused)");
  sub->add_option("--generations", generations,
                  "born-again: train N generations, each taught by the previous (no --teacher)")
      ->check(CLI::PositiveNumber);
  // The training options of `nnopt train`.
  add_train_options(sub, t, milestones, val_size);
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      // Everything the user typed is checked before data or models are loaded.
      std::vector<LossSpec> specs =
          loss_specs(loss_args, {{"hint", hint_args}, {"at", at_args}, {"sp", sp_args}});
      DistillOptions dopt = DistillOptions().ce_weight(ce_weight).cache_teacher(!no_teacher_cache);
      dopt.validate();
      std::vector<std::string> teachers = split_all({teacher_arg});
      NNOPT_CHECK(generations > 1 || !teachers.empty(), ValueError,
                  "distill: --teacher CKPT is required (or --generations N >= 2 for born-again)");
      NNOPT_CHECK(generations == 1 || teachers.empty(), ValueError,
                  "distill: --generations trains its own teachers; drop --teacher");
      if (c.out.empty()) c.out = "runs/distill";
      if (!milestones.empty()) t.milestones(parse_shape(milestones, "--milestones"));
      t.seed(c.seed).out_dir(c.out).progress(c.progress);
      t.validate();

      DatasetOptions dso = dataset_options(d);
      Dataset train = load_dataset(dso, true);
      Dataset test = load_dataset(dso, false);
      Dataset val = test;
      if (val_size > 0) std::tie(train, val) = split_validation(train, val_size, c.seed);

      seed_everything(c.seed);
      GraphModule student = nullptr;
      if (path_exists(student_arg) || ends_with(student_arg, ".nnopt") || ends_with(student_arg, ".pt")) {
        student = load_teacher_model(student_arg, train.shape());  // same loaders as a teacher
        student->train();
      } else {
        ModelOptions mo;
        mo.input_shape = train.shape();
        mo.num_classes = train.num_classes;
        mo.width = width;
        mo.depth = depth;
        student = GraphModule(build_model(student_arg, mo));
      }
      NNOPT_CHECK(student->graph().input_shape() == train.shape(), ValueError, "distill: the student takes ",
                  c10::IntArrayRef(student->graph().input_shape()), " but ", train.name,
                  " samples are ", c10::IntArrayRef(train.shape()));
      std::string loss_text;
      for (const auto& s : specs) {
        loss_text += (loss_text.empty() ? "" : " ") + s.to_string();
        for (const auto& p : s.taps) loss_text += " " + p.teacher + ":" + p.student;
      }

      json j = {{"student", student_arg},
                {"losses", loss_text},
                {"checkpoint", path_join(c.out, "model.nnopt")},
                {"metrics", path_join(c.out, "metrics.jsonl")},
                {"epochs", t.epochs()}};
      std::string human;
      double secs = 0;
      if (generations > 1) {
        BornAgainOptions bo(generations);
        bo.train(t).losses(specs).distill(dopt).out_dir(c.out);
        std::cerr << "nnopt distill: born-again, " << generations << " generations of " << student_arg
                  << " on " << train.name << ", losses " << loss_text << ", out " << c.out << "\n";
        BornAgainResult r = born_again(student->graph(), train, test, bo);
        // The last generation is the result: DIR/model.nnopt and DIR/metrics.jsonl.
        std::string last = path_join(c.out, str_cat("gen", generations));
        write_file_atomic(path_join(c.out, "model.nnopt"), read_file(path_join(last, "model.nnopt")));
        write_file_atomic(path_join(c.out, "metrics.jsonl"), read_file(path_join(last, "metrics.jsonl")));
        for (size_t k = 0; k < r.test_accuracy.size(); ++k) {
          human += str_cat("generation ", k + 1, ": test accuracy ", pct(r.test_accuracy[k]), "\n");
          secs += r.runs[k].seconds;
        }
        j["generation_test_accuracy"] = r.test_accuracy;
        j["generation_checkpoints"] = r.checkpoints;
        j["test_accuracy"] = r.test_accuracy.back();
      } else {
        TeacherPtr teacher = load_teacher(teachers, student->graph().input_shape(),
                                          ensemble_mode_from_name(ensemble));
        auto cb = std::make_shared<DistillCallback>(student, teacher, [&] {
          std::vector<DistillLossPtr> losses;
          for (const auto& s : specs) losses.push_back(make_distill_loss(s));
          return losses;
        }(), dopt);
        EvalResult tev = evaluate_teacher(*teacher, test, t.eval_batch_size());
        std::cerr << "nnopt distill: " << teachers.size() << " teacher(s) ("
                  << (teachers.size() > 1 ? std::string("ensemble of ") + ensemble + ", " : "")
                  << "test accuracy " << pct(tev.accuracy) << ") -> " << student_arg << " ("
                  << student->graph().num_params() << " params) on " << train.name << ", losses "
                  << loss_text << ", ce weight " << cb->ce_weight() << ", " << threads()
                  << " threads, out " << c.out << "\n";
        Trainer trainer(student, t);
        trainer.add_callback(cb);
        TrainResult r = trainer.fit(train, &val);
        EvalResult ev = evaluate(student, test, t.eval_batch_size());
        secs = r.seconds;
        j["teacher_test_accuracy"] = tev.accuracy;
        j["test_accuracy"] = ev.accuracy;
        j["test_loss"] = ev.loss;
        j["best_val_accuracy"] = r.best_val_acc;
        j["ce_weight"] = cb->ce_weight();
        human = str_cat("teacher test accuracy ", pct(tev.accuracy), "\nstudent test accuracy ",
                        pct(ev.accuracy), " (loss ", fmt(ev.loss, 4), ") after ", t.epochs(),
                        " epochs\n");
      }
      j["train_seconds"] = secs;
      emit(c, human + str_cat(format_duration(secs), " of training\nmodel: ",
                              path_join(c.out, "model.nnopt"), "\n"),
           j.dump());
      return 0;
    };
  });
}

}  // namespace nnopt::cli
