// nnopt prune: structured (channel) and unstructured / N:M pruning of a
// checkpoint, with a schedule and fine-tuning on the one Trainer; prints the
// model's parameters, MACs, size and measured latency before and after.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/core/table.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/distill/distill_callback.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/prune/callbacks.h"
#include "nnopt/prune/criterion.h"
#include "nnopt/prune/measure.h"
#include "nnopt/prune/schedule.h"
#include "nnopt/prune/sparse_checkpoint.h"
#include "nnopt/prune/structure_search.h"
#include "nnopt/prune/surgery.h"
#include "nnopt/prune/target.h"
#include "nnopt/prune/unstructured.h"
#include "nnopt/train/trainer.h"

namespace nnopt::cli {
using json = nlohmann::json;

namespace {

struct PruneArgs {
  std::string checkpoint, criterion = "l1", granularity = "channel", target, schedule = "oneshot";
  int64_t finetune_epochs = 0, cycles = 3, prune_frequency = 0, importance_batches = 4;
  int64_t latency_batch = 1, latency_rounds = 3, latency_repeats = 20, channel_multiple = 1;
  std::string latency_threads;  // "1,2"; empty = as --threads
  std::string distill;          // loss spec, e.g. "kd:T=4,alpha=0.9"; empty = no teacher
  std::string keep;             // "group=N,...": channel counts instead of a target
  double max_group_ratio = 0.9, ramp_fraction = 0.67, bn_l1 = 0;
  bool per_layer = false;
};

struct Snapshot {
  int64_t params = 0, nonzero = 0, macs = 0, size = 0;
  double acc = 0;
  std::vector<double> latency_ms;  // per batch size
  std::vector<double> folded_ms;   // the same with batch norm folded into the convs
  std::vector<double> tuned_ms;    // folded, each conv on its faster kernel (deploy/conv_tuning.h)
};

std::string pct(double v) { return fmt(100 * v, 2) + " %"; }

std::string mega(int64_t v) { return fmt(static_cast<double>(v) / 1e6, 3) + " M"; }

int64_t nonzero_params(GraphModule& m) {
  torch::NoGradGuard ng;
  int64_t zeros = 0;
  for (const auto& n : prunable_weights(m->graph()))
    zeros += (m->effective_weight(n) == 0).sum().item<int64_t>();
  return m->graph().num_params() - zeros;
}

void check_args(const PruneArgs& a) {
  const bool unstructured = a.granularity == "unstructured", nm = a.granularity == "2:4";
  if (a.criterion == "magnitude") {
    NNOPT_CHECK(unstructured || nm, ValueError,
                "prune: --criterion magnitude ranks single weights; use --granularity unstructured or 2:4");
  } else {
    make_importance(a.criterion);  // unknown names fail here, listing the known ones
    NNOPT_CHECK(!unstructured && !nm, ValueError, "prune: --criterion ", a.criterion,
                " ranks channels; use --granularity channel (or --criterion magnitude)");
  }
  PruneSchedule(a.schedule, 0.5).validate();  // unknown schedule names
  if (nm) {
    NNOPT_CHECK(a.schedule == "oneshot", ValueError,
                "prune: 2:4 masks are fixed by definition; use --schedule oneshot");
    if (!a.target.empty()) {
      PruneTarget t = PruneTarget::parse(a.target);
      NNOPT_CHECK(t.kind == TargetKind::kSparsity && std::abs(t.value - 0.5) < 1e-9, ValueError,
                  "prune: 2:4 pruning has sparsity 0.5 by definition; drop --target ", a.target);
    }
  } else if (!a.keep.empty()) {
    NNOPT_CHECK(a.granularity == "channel" && a.schedule == "oneshot", ValueError,
                "prune: --keep sets channel counts; it needs --granularity channel and --schedule oneshot");
    NNOPT_CHECK(a.target.empty(), ValueError, "prune: give either --keep or --target, not both");
    parse_channel_counts(a.keep);
  } else {
    NNOPT_CHECK(!a.target.empty(), ValueError,
                "prune: --target KIND=VALUE is required (sparsity, params, macs or latency), or --keep");
    PruneTarget t = PruneTarget::parse(a.target);
    NNOPT_CHECK(!unstructured || (t.kind != TargetKind::kMacs && t.kind != TargetKind::kLatency), ValueError,
                "prune: --target ", a.target,
                " needs --granularity channel: zeroed weights do not remove MACs or time in dense kernels");
  }
  NNOPT_CHECK(!(unstructured || nm) || a.schedule != "sfp", ValueError,
              "prune: schedule 'sfp' (soft filter pruning) needs --granularity channel");
  NNOPT_CHECK(a.schedule == "oneshot" || a.finetune_epochs >= 1, ValueError, "prune: schedule '", a.schedule,
              "' prunes during training; give --finetune-epochs E >= 1");
  if (!a.latency_threads.empty()) parse_shape(a.latency_threads, "--latency-threads");
  NNOPT_CHECK(a.ramp_fraction > 0 && a.ramp_fraction <= 1, ValueError,
              "prune: --ramp-fraction must be in (0, 1], got ", a.ramp_fraction);
  if (!a.distill.empty()) {
    NNOPT_CHECK(a.finetune_epochs >= 1, ValueError, "prune: --distill ", a.distill,
                " acts while fine-tuning; give --finetune-epochs E >= 1");
    make_distill_loss(parse_loss_spec(a.distill));  // unknown loss names and keys fail here
  }
}

}  // namespace

void register_prune(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static PruneArgs a;
  static TrainOptions t = prune_finetune_recipe();
  auto* sub = app.add_subcommand(
      "prune", "prune a checkpoint (channels, single weights or 2:4), fine-tune, and measure the speed-up");
  add_common(sub, c);
  add_data(sub, d);
  sub->add_option("checkpoint", a.checkpoint, "nnopt checkpoint to prune");
  sub->add_option("--criterion", a.criterion,
                  "importance: l1, l2, fpgm, bn, taylor, hrank, random (channels) or magnitude (weights)");
  sub->add_option("--granularity", a.granularity, "channel, unstructured or 2:4")
      ->check(CLI::IsMember({"channel", "unstructured", "2:4"}));
  sub->add_option("--target", a.target,
                  "sparsity=F, params=F, macs=F (fractions removed) or latency=MS (budget at --latency-batch)");
  sub->add_option("--schedule", a.schedule, "oneshot, iterative, agp, sfp or gradual");
  sub->add_option("--finetune-epochs", a.finetune_epochs,
                  "epochs of training after (oneshot) or during (other schedules) pruning")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--cycles", a.cycles, "iterative: prune / fine-tune rounds")->check(CLI::PositiveNumber);
  sub->add_option("--ramp-fraction", a.ramp_fraction,
                  "agp / gradual / iterative: share of the training over which the target is reached");
  sub->add_option("--prune-frequency", a.prune_frequency,
                  "agp / gradual: steps between updates (0 = a quarter epoch)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--per-layer", a.per_layer, "cut the same fraction of every group (default: global ranking)");
  sub->add_option("--max-group-ratio", a.max_group_ratio, "at most this fraction of a group is removed");
  sub->add_option("--channel-multiple", a.channel_multiple, "round kept channels up to a multiple of this")
      ->check(CLI::PositiveNumber);
  sub->add_option("--importance-batches", a.importance_batches,
                  "batches of 64 training images for taylor and hrank")
      ->check(CLI::PositiveNumber);
  sub->add_option("--bn-l1", a.bn_l1, "network slimming: L1 penalty on batch-norm scales while training")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--latency-batch", a.latency_batch, "batch size of a latency target")
      ->check(CLI::PositiveNumber);
  sub->add_option("--latency-rounds", a.latency_rounds, "alternating rounds of the before/after timing")
      ->check(CLI::PositiveNumber);
  sub->add_option("--latency-threads", a.latency_threads,
                  "thread counts for the before/after timing, e.g. 1,2 (default: as --threads); the "
                  "first one fills the table");
  sub->add_option("--latency-repeats", a.latency_repeats, "timed runs per latency measurement (median)")
      ->check(CLI::Range(3, 100000));
  sub->add_option("--keep", a.keep,
                  "channel counts per dependency group instead of a target, e.g. layer1.1.conv1=0,layer2.0.conv2=24 "
                  "(the criterion picks which channels stay; 0 removes a residual branch; other groups keep all)");
  sub->add_option("--distill", a.distill,
                  "fine-tune with the unpruned model as teacher, with this logit loss (e.g. kd:T=4,alpha=0.9)");
  add_finetune_options(sub, t);  // the recipe: SGD, cosine LR
  sub->callback([&run, sub] {
    if (!sub->get_subcommands().empty()) return;  // `nnopt prune search` runs instead
    run = [] {
      apply_common(c);
      NNOPT_CHECK(!a.checkpoint.empty(), ValueError, "prune: CHECKPOINT is required (nnopt prune CHECKPOINT ...)");
      check_args(a);
      NNOPT_CHECK(!c.out.empty(), ValueError, "prune: --out DIR is required");
      const bool channel = a.granularity == "channel", nm = a.granularity == "2:4";
      ChannelPlannerOptions popt = ChannelPlannerOptions()
                                       .global(!a.per_layer)
                                       .max_group_ratio(a.max_group_ratio)
                                       .channel_multiple(a.channel_multiple)
                                       .latency_batch(a.latency_batch);
      popt.validate();
      PruneTarget target = a.target.empty() ? PruneTarget{TargetKind::kSparsity, 0.5} : PruneTarget::parse(a.target);

      DatasetOptions dso = dataset_options(d);
      Dataset train = load_dataset(dso, true);
      Dataset test = load_dataset(dso, false);
      std::string meta;
      GraphModule orig = load_sparse_model(a.checkpoint, &meta);
      GraphModule model = load_sparse_model(a.checkpoint);
      NNOPT_CHECK(orig->graph().input_shape() == train.shape(), ValueError, "prune: ", a.checkpoint,
                  " takes ", c10::IntArrayRef(orig->graph().input_shape()), " but ", train.name,
                  " samples are ", c10::IntArrayRef(train.shape()));
      orig->eval();
      make_dirs(c.out);

      Snapshot before;
      before.params = orig->graph().num_params();
      before.nonzero = nonzero_params(orig);
      before.macs = orig->graph().macs();
      before.size = static_cast<int64_t>(file_size(a.checkpoint));
      before.acc = evaluate(orig, test, t.eval_batch_size()).accuracy;
      std::cerr << "nnopt prune: " << a.checkpoint << " (" << before.params << " params, "
                << before.macs << " MACs, test accuracy " << pct(before.acc) << "), " << a.granularity
                << " / " << a.criterion << " / " << (!a.keep.empty() ? "keep " + a.keep : a.target.empty() ? "sparsity=0.5" : a.target) << " / "
                << a.schedule << ", " << a.finetune_epochs << " fine-tune epochs, " << threads()
                << " threads, out " << c.out << "\n";

      // Training recipe shared by every phase.
      const int64_t spe = [&] {
        int64_t s = (train.size() + t.batch_size() - 1) / t.batch_size();
        return t.max_batches() > 0 ? std::min(s, t.max_batches()) : s;
      }();
      auto trainer_opts = [&](int64_t epochs, const std::string& sub_dir) {
        TrainOptions o = t;
        o.epochs(epochs).seed(c.seed).progress(c.progress).out_dir(path_join(c.out, sub_dir));
        o.validate();
        return o;
      };
      auto fit = [&](GraphModule& m, int64_t epochs, const std::string& sub_dir,
                     std::vector<CallbackPtr> cbs) -> TrainResult {
        Trainer tr(m, trainer_opts(epochs, sub_dir));
        for (auto& cb : cbs) tr.add_callback(cb);
        // The unpruned model teaches (eval mode, no grad); one callback per fit.
        if (!a.distill.empty()) tr.add_callback(make_distill_callback(orig, m, {parse_loss_spec(a.distill)}));
        if (a.bn_l1 > 0) tr.add_callback(std::make_shared<BnL1Callback>(a.bn_l1));
        return tr.fit(train, &test);
      };
      const int64_t total_steps = a.finetune_epochs * spe;
      const int64_t ramp_end = std::max<int64_t>(1, std::llround(a.ramp_fraction * total_steps));
      const int64_t freq = a.prune_frequency > 0 ? a.prune_frequency : std::max<int64_t>(1, spe / 4);

      json info = {{"criterion", a.criterion}, {"granularity", a.granularity},
                   {"target", !a.keep.empty() ? "keep" : a.target.empty() ? "sparsity=0.5" : a.target}, {"schedule", a.schedule},
                   {"finetune_epochs", a.finetune_epochs}, {"source", a.checkpoint}};
      if (!a.distill.empty()) info["distill"] = a.distill;
      GraphModule pruned = nullptr;
      double train_secs = 0;

      if (channel) {
        ImportancePtr imp = make_importance(a.criterion, ImportanceOptions().seed(c.seed));
        ImportanceData idata;
        if (imp->needs_data()) idata = importance_batches(train, a.importance_batches, c.seed);
        DependencyGraph deps(model->graph());
        // A latency budget becomes the MAC fraction of the plan that meets it.
        TargetKind metric = target.kind;
        double final_value = target.value;
        ChannelPlan first_plan;
        if (!a.keep.empty()) {
          first_plan = plan_keeping(deps, imp->score(model, deps, idata), parse_channel_counts(a.keep));
          info["keep"] = a.keep;
        } else if (target.kind == TargetKind::kLatency || a.schedule == "oneshot") {
          auto sol = solve_channel_target(deps, imp->score(model, deps, idata), target, popt);
          first_plan = sol.plan;
          if (target.kind == TargetKind::kLatency) {
            metric = TargetKind::kMacs;
            final_value = plan_metric(deps, sol.plan, TargetKind::kMacs, popt);
            info["latency_plan_ms"] = sol.achieved;
          }
        }
        if (a.schedule == "oneshot") {
          pruned = prune_channels(model, deps, first_plan);
          info["plan"] = json::parse(first_plan.to_json());
          if (a.finetune_epochs > 0) train_secs += fit(pruned, a.finetune_epochs, "finetune", {}).seconds;
        } else if (a.schedule == "iterative") {
          // Rounds of (prune physically, fine-tune); round k reaches 1 - (1 - F)^(k/n) of the original.
          pruned = model;
          const double base = metric == TargetKind::kParams ? static_cast<double>(before.params)
                              : metric == TargetKind::kMacs ? static_cast<double>(before.macs)
                                                            : static_cast<double>(deps.num_units());
          const double base_units = static_cast<double>(deps.num_units());
          json rounds = json::array();
          int64_t epochs_left = a.finetune_epochs;
          for (int64_t k = 1; k <= a.cycles; ++k) {
            double want = 1.0 - std::pow(1.0 - final_value, static_cast<double>(k) / a.cycles);
            DependencyGraph dk(pruned->graph());
            double cur = metric == TargetKind::kParams ? pruned->graph().num_params()
                         : metric == TargetKind::kMacs ? pruned->graph().macs()
                                                       : static_cast<double>(dk.num_units());
            double removed = 1.0 - cur / (metric == TargetKind::kSparsity ? base_units : base);
            double step = std::max(0.0, 1.0 - (1.0 - want) / std::max(1e-12, 1.0 - removed));
            auto sol = solve_channel_target(dk, imp->score(pruned, dk, idata),
                                            PruneTarget{metric, std::min(step, 0.999)}, popt);
            pruned = prune_channels(pruned, dk, sol.plan);
            int64_t ep = k == a.cycles ? epochs_left : std::max<int64_t>(1, a.finetune_epochs / a.cycles);
            ep = std::min(ep, epochs_left);
            epochs_left -= ep;
            double acc = NAN;
            if (ep > 0) {
              auto r = fit(pruned, ep, str_cat("round", k), {});
              train_secs += r.seconds;
              acc = r.final_val_acc;
            }
            rounds.push_back({{"round", k}, {"target", want}, {"removed_channels", sol.plan.count()},
                              {"macs", pruned->graph().macs()}, {"epochs", ep}, {"val_acc", acc}});
            std::cerr << "nnopt prune: round " << k << "/" << a.cycles << ": " << pruned->graph().macs()
                      << " MACs, " << pruned->graph().num_params() << " params\n";
          }
          info["rounds"] = rounds;
        } else {  // agp, gradual, sfp: zeroing on the full model, surgery at the end
          PruneSchedule sched = PruneSchedule(a.schedule, final_value).begin_step(0).end_step(ramp_end).frequency(freq);
          auto cb = std::make_shared<ChannelPruneCallback>(model, imp, idata, sched, metric, popt);
          train_secs += fit(model, a.finetune_epochs, "finetune", {cb}).seconds;
          info["plan"] = json::parse(cb->plan().to_json());
          zero_channels(model, cb->deps(), cb->plan());
          pruned = prune_channels(model, cb->deps(), cb->plan());
        }
      } else {
        // Unstructured / N:M: masks as weight transforms while fine-tuning, baked at the end.
        double s = 0.5;
        if (!nm) {
          s = target.value;
          if (target.kind == TargetKind::kParams) {
            int64_t prunable = 0;
            for (const auto& n : prunable_weights(model->graph())) prunable += node_params(model->graph().node(n));
            s = target.value * static_cast<double>(before.params) / static_cast<double>(prunable);
            NNOPT_CHECK(s < 1, ValueError, "prune: target ", a.target,
                        " needs more zeros than the conv/linear weights hold");
          }
        }
        const bool global = !a.per_layer;
        std::vector<CallbackPtr> cbs;
        if (nm) {
          apply_masks(model, nm_masks(model, 2, 4));
        } else if (a.schedule == "oneshot") {
          apply_masks(model, magnitude_masks(model, s, global));
        } else {
          PruneSchedule sched = PruneSchedule(a.schedule, s).begin_step(0).end_step(ramp_end).frequency(freq).cycles(a.cycles);
          cbs.push_back(std::make_shared<UnstructuredPruneCallback>(model, sched, global));
        }
        if (a.finetune_epochs > 0) train_secs += fit(model, a.finetune_epochs, "finetune", cbs).seconds;
        bake_masks(model);
        pruned = model;
        info["weight_sparsity"] = weight_sparsity(pruned);
      }
      pruned->eval();

      // Save: the dense model for every tool; unstructured also compressed.
      std::string out_model = path_join(c.out, "model.nnopt");
      json meta_out = json::parse(meta);
      meta_out["prune"] = info;
      save_model(out_model, pruned, meta_out.dump());
      Snapshot after;
      after.params = pruned->graph().num_params();
      after.nonzero = nonzero_params(pruned);
      after.macs = pruned->graph().macs();
      after.size = static_cast<int64_t>(file_size(out_model));
      if (!channel) {
        std::string sparse_path = path_join(c.out, "model.sparse.nnopt");
        int64_t n = save_sparse_model(sparse_path, pruned, meta_out.dump());
        after.size = static_cast<int64_t>(file_size(sparse_path));
        info["sparse_checkpoint"] = sparse_path;
        info["sparse_tensors"] = n;
      }
      after.acc = evaluate(pruned, test, t.eval_batch_size()).accuracy;

      // Latency at batch 1 and 64, alternating before / after.
      // Also in deployment form: batch norm folded into the convs (both models alike).
      GraphModule orig_f = fold_batch_norm(orig), pruned_f = fold_batch_norm(pruned);
      orig_f->eval();
      pruned_f->eval();
      const int run_threads = threads();
      std::vector<int64_t> lat_threads = {run_threads};
      if (!a.latency_threads.empty()) lat_threads = parse_shape(a.latency_threads, "--latency-threads");
      std::vector<int64_t> batches = {1, 64};
      json by_threads = json::object();
      for (size_t ti = 0; ti < lat_threads.size(); ++ti) {
        set_threads(static_cast<int>(lat_threads[ti]));
        json row = json::object();
        for (auto b : batches) {
          auto ms = alternating_latency({&orig, &pruned}, b, a.latency_rounds, a.latency_repeats);
          auto fs = alternating_latency({&orig_f, &pruned_f}, b, a.latency_rounds, a.latency_repeats);
          // Deployed at its best: folded, each conv on its faster kernel and the faster
          // thread count (<= the threads of this row) for this batch.
          tune_deployment(orig_f, b);
          tune_deployment(pruned_f, b);
          auto ts = alternating_latency({&orig_f, &pruned_f}, b, a.latency_rounds, a.latency_repeats);
          reset_conv_kernels(orig_f);
          reset_conv_kernels(pruned_f);
          row[str_cat("b", b)] = {{"before_ms", ms[0]}, {"after_ms", ms[1]}, {"speedup", ms[0] / ms[1]},
                                  {"folded_before_ms", fs[0]}, {"folded_after_ms", fs[1]},
                                  {"folded_speedup", fs[0] / fs[1]}, {"tuned_before_ms", ts[0]},
                                  {"tuned_after_ms", ts[1]}, {"tuned_speedup", ts[0] / ts[1]}};
          if (ti > 0) continue;
          before.latency_ms.push_back(ms[0]);
          after.latency_ms.push_back(ms[1]);
          before.folded_ms.push_back(fs[0]);
          after.folded_ms.push_back(fs[1]);
          before.tuned_ms.push_back(ts[0]);
          after.tuned_ms.push_back(ts[1]);
        }
        by_threads[std::to_string(threads())] = row;
      }
      info["latency_threads"] = lat_threads;
      info["latency_by_threads"] = by_threads;
      set_threads(run_threads);

      Table tab({"", "before", "after", "change"});
      auto ratio = [](double x, double y) { return y > 0 ? fmt(x / y, 2) + "x" : std::string("-"); };
      tab.add_row({"params", std::to_string(before.params), std::to_string(after.params),
                   pct(1.0 - static_cast<double>(after.params) / before.params) + " removed"});
      tab.add_row({"nonzero params", std::to_string(before.nonzero), std::to_string(after.nonzero),
                   pct(1.0 - static_cast<double>(after.nonzero) / before.nonzero) + " removed"});
      tab.add_row({"MACs", mega(before.macs), mega(after.macs),
                   pct(1.0 - static_cast<double>(after.macs) / before.macs) + " removed (" +
                       ratio(before.macs, after.macs) + " fewer)"});
      tab.add_row({"size (bytes)", std::to_string(before.size), std::to_string(after.size),
                   ratio(before.size, after.size) + " smaller"});
      for (size_t i = 0; i < batches.size(); ++i)
        tab.add_row({str_cat("latency b", batches[i], " (ms, ", lat_threads[0], " thr)"), fmt(before.latency_ms[i], 3),
                     fmt(after.latency_ms[i], 3), ratio(before.latency_ms[i], after.latency_ms[i]) + " faster"});
      for (size_t i = 0; i < batches.size(); ++i)
        tab.add_row({str_cat("latency b", batches[i], " BN folded (ms, ", lat_threads[0], " thr)"), fmt(before.folded_ms[i], 3),
                     fmt(after.folded_ms[i], 3), ratio(before.folded_ms[i], after.folded_ms[i]) + " faster"});
      for (size_t i = 0; i < batches.size(); ++i)
        tab.add_row({str_cat("latency b", batches[i], " folded, tuned convs (ms, ", lat_threads[0], " thr)"),
                     fmt(before.tuned_ms[i], 3), fmt(after.tuned_ms[i], 3),
                     ratio(before.tuned_ms[i], after.tuned_ms[i]) + " faster"});
      tab.add_row({"test accuracy", pct(before.acc), pct(after.acc),
                   fmt(100 * (after.acc - before.acc), 2) + " pt"});

      auto snap_json = [&](const Snapshot& s) {
        return json{{"params", s.params}, {"nonzero_params", s.nonzero}, {"macs", s.macs},
                    {"size_bytes", s.size}, {"latency_ms_b1", s.latency_ms[0]},
                    {"latency_ms_b64", s.latency_ms[1]}, {"folded_latency_ms_b1", s.folded_ms[0]},
                    {"folded_latency_ms_b64", s.folded_ms[1]}, {"tuned_latency_ms_b1", s.tuned_ms[0]},
                    {"tuned_latency_ms_b64", s.tuned_ms[1]}, {"test_accuracy", s.acc}};
      };
      json j = info;
      j["before"] = snap_json(before);
      j["after"] = snap_json(after);
      j["macs_ratio"] = static_cast<double>(before.macs) / after.macs;
      j["speedup_b1"] = before.latency_ms[0] / after.latency_ms[0];
      j["speedup_b64"] = before.latency_ms[1] / after.latency_ms[1];
      j["folded_speedup_b1"] = before.folded_ms[0] / after.folded_ms[0];
      j["folded_speedup_b64"] = before.folded_ms[1] / after.folded_ms[1];
      j["tuned_speedup_b1"] = before.tuned_ms[0] / after.tuned_ms[0];
      j["tuned_speedup_b64"] = before.tuned_ms[1] / after.tuned_ms[1];
      j["accuracy_drop_pt"] = 100 * (before.acc - after.acc);
      j["train_seconds"] = train_secs;
      j["model"] = out_model;
      write_file_atomic(path_join(c.out, "prune.json"), j.dump(1));
      emit(c, tab.to_text() + str_cat("model: ", out_model, "\n"), j.dump());
      return 0;
    };
  });
}

}  // namespace nnopt::cli
