// compare_prune; see compare.h.
#include "nnopt/prune/compare.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/strings.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/pipeline/study.h"
#include "nnopt/prune/criterion.h"
#include "nnopt/prune/target.h"

namespace nnopt {
using json = nlohmann::json;

std::vector<double> parse_mac_reductions(const std::string& s, const std::string& what) {
  std::vector<double> out;
  for (const auto& item : split_list(s)) {
    char* end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    NNOPT_CHECK(end == item.c_str() + item.size(), ValueError, what, ": '", item,
                "' is not a fraction like 0.5 (the share of MACs removed)");
    NNOPT_CHECK(v > 0 && v < 1, ValueError, what, ": MAC reduction ", item,
                " must be in (0, 1) (the fraction of MACs removed)");
    NNOPT_CHECK(std::find(out.begin(), out.end(), v) == out.end(), ValueError, what, ": ", item,
                " is given twice");
    out.push_back(v);
  }
  NNOPT_CHECK(!out.empty(), ValueError, what, ": no MAC reductions in '", s, "' (e.g. 0.3,0.5,0.7)");
  return out;
}

void PruneCompareOptions::validate() const {
  NNOPT_CHECK(!checkpoint_.empty(), ValueError, "compare prune: no checkpoint given");
  NNOPT_CHECK(!out_dir_.empty(), ValueError, "compare prune: no output folder (--out DIR)");
  for (size_t i = 0; i < criteria_.size(); ++i) {
    make_importance(criteria_[i]);  // unknown names fail here, listing the known ones
    for (size_t k = 0; k < i; ++k)
      NNOPT_CHECK(criteria_[k] != criteria_[i], ValueError, "compare prune: criterion '", criteria_[i],
                  "' is given twice");
  }
  NNOPT_CHECK(!macs_.empty(), ValueError, "compare prune: no MAC reductions (--macs 0.3,0.5,0.7)");
  for (size_t i = 0; i < macs_.size(); ++i) {
    NNOPT_CHECK(macs_[i] > 0 && macs_[i] < 1, ValueError, "compare prune: MAC reduction ", macs_[i],
                " must be in (0, 1) (the fraction of MACs removed)");
    for (size_t k = 0; k < i; ++k)
      NNOPT_CHECK(macs_[k] != macs_[i], ValueError, "compare prune: MAC reduction ", macs_[i], " is given twice");
  }
  check_seed_list(seeds_, "compare prune");
  NNOPT_CHECK(finetune_epochs_ >= 0, ValueError, "compare prune: fine-tune epochs must be >= 0, got ",
              finetune_epochs_);
  ChannelPlannerOptions().global(global_).max_group_ratio(max_group_ratio_).validate();
  NNOPT_CHECK(importance_batches_ >= 1, ValueError, "compare prune: importance batches must be >= 1, got ",
              importance_batches_);
  NNOPT_CHECK(latency_rounds_ >= 1, ValueError, "compare prune: latency rounds must be >= 1, got ",
              latency_rounds_);
  NNOPT_CHECK(latency_repeats_ >= 3, ValueError, "compare prune: latency repeats must be >= 3, got ",
              latency_repeats_);
  TrainOptions t = train_;
  t.epochs(1).out_dir("").resume(false).validate();
}

namespace {

// "macs50", "macs33.3": the run-name part of a reduction.
std::string reduction_tag(double r) {
  std::string t = fmt(100 * r, 1);
  if (t.size() > 2 && t.compare(t.size() - 2, 2, ".0") == 0) t.resize(t.size() - 2);
  return "macs" + t;
}

std::string reduction_label(double r) {
  std::string t = reduction_tag(r).substr(4);
  return "-" + t + "%";
}

// A cell's values over the seeds.
struct Cell {
  bool ok = false;
  std::string reason;
  std::vector<double> acc, params, macs, ms_b1, ms_b64, sp_b1, sp_b64;
  static double mean(const std::vector<double>& v) { return mean_std(v).mean; }
};

// The columns of one reduction, in table order; `higher` = larger is better.
struct Column {
  const char* name;
  bool higher;
};
constexpr Column kColumns[] = {{"acc % (drop)", true}, {"params K", false}, {"MACs M", false},
                               {"b1 ms (x)", true},    {"b64 ms (x)", true}};
constexpr size_t kNumColumns = sizeof(kColumns) / sizeof(kColumns[0]);

// The value the best mark compares, per column (speed-up for the latency columns).
double column_value(const Cell& c, size_t col) {
  switch (col) {
    case 0: return Cell::mean(c.acc);
    case 1: return Cell::mean(c.params);
    case 2: return Cell::mean(c.macs);
    case 3: return Cell::mean(c.sp_b1);
    default: return Cell::mean(c.sp_b64);
  }
}

std::string column_text(const Cell& c, size_t col, double ref_acc) {
  switch (col) {
    case 0:
      return str_cat(format_mean_std(mean_std(c.acc)), " (", fmt(Cell::mean(c.acc) - 100 * ref_acc, 2), ")");
    case 1: return fmt(Cell::mean(c.params) / 1e3, 1);
    case 2: return fmt(Cell::mean(c.macs) / 1e6, 2);
    case 3: return str_cat(fmt(Cell::mean(c.ms_b1), 2), " (", fmt(Cell::mean(c.sp_b1), 2), "x)");
    default: return str_cat(fmt(Cell::mean(c.ms_b64), 2), " (", fmt(Cell::mean(c.sp_b64), 2), "x)");
  }
}

}  // namespace

PruneCompareResult compare_prune(const PruneCompareOptions& opt, const Dataset& train, const Dataset& test,
                                 const LineLog& log_fn) {
  opt.validate();
  auto log = [&](const std::string& s) {
    if (log_fn) log_fn(s);
  };
  const StringList criteria = opt.criteria().empty() ? importance_names() : opt.criteria();
  const std::vector<double>& reductions = opt.macs();
  NNOPT_CHECK(path_exists(opt.checkpoint()), FileError, opt.checkpoint(), ": checkpoint not found");
  GraphModule model = load_model(opt.checkpoint());
  model->eval();
  NNOPT_CHECK(model->graph().input_shape() == train.shape(), ValueError, "compare prune: ", opt.checkpoint(),
              " takes ", c10::IntArrayRef(model->graph().input_shape()), " but ", train.name, " samples are ",
              c10::IntArrayRef(train.shape()));
  DependencyGraph deps(model->graph());
  const int64_t base_macs = model->graph().macs();
  const ChannelPlannerOptions popt =
      ChannelPlannerOptions().global(opt.global()).max_group_ratio(opt.max_group_ratio());

  TrainOptions recipe = opt.train();
  recipe.epochs(std::max<int64_t>(1, opt.finetune_epochs())).seed(0).out_dir("").resume(false);
  json protocol = {{"kind", "compare prune"},
                   {"checkpoint", opt.checkpoint()},
                   {"checkpoint_bytes", file_size(opt.checkpoint())},
                   {"data", train.name},
                   {"train_size", train.size()},
                   {"test_size", test.size()},
                   {"finetune_epochs", opt.finetune_epochs()},
                   {"train", train_options_json(recipe)},
                   {"planner", {{"global", opt.global()}, {"max_group_ratio", opt.max_group_ratio()}}},
                   {"importance_batches", opt.importance_batches()},
                   {"latency", {{"rounds", opt.latency_rounds()}, {"repeats", opt.latency_repeats()}}}};
  Study study(opt.out_dir(), protocol);
  const int64_t eval_batch = opt.train().eval_batch_size();

  json ref = study.run("unpruned", [&](const std::string&) {
    json r = {{"accuracy", evaluate(model, test, eval_batch).accuracy},
              {"params", model->graph().num_params()},
              {"macs", base_macs}};
    r.update(latency_fields(latency_vs_reference({&model}, {1, 64}, opt.latency_rounds(), opt.latency_repeats()), 0));
    return r;
  });
  const double ref_acc = ref.at("accuracy").get<double>();

  const int64_t total = static_cast<int64_t>(criteria.size() * reductions.size() * opt.seeds().size());
  int64_t k = 0;
  std::map<std::string, std::map<double, Cell>> cells;  // criterion -> reduction -> cell
  json runs = json::array();
  for (double red : reductions) {
    for (const auto& crit : criteria) {
      Cell& cell = cells[crit][red];
      cell.ok = true;
      for (int64_t seed : opt.seeds()) {
        ++k;
        const std::string name = str_cat(crit, "/", reduction_tag(red), "/seed", seed);
        if (!study.finished(name))
          log(str_cat("compare prune: run ", k, "/", total, ": ", crit, " at macs=", red, ", seed ", seed));
        json r = study.run(name, [&](const std::string& dir) {
          const uint64_t s = static_cast<uint64_t>(seed);
          json out = {{"criterion", crit}, {"macs_target", red}, {"seed", seed}};
          ImportancePtr imp = make_importance(crit, ImportanceOptions().seed(s));
          ImportanceData idata;
          if (imp->needs_data()) idata = importance_batches(train, opt.importance_batches(), s);
          ChannelSolution sol;
          try {
            sol = solve_channel_target(deps, imp->score(model, deps, idata), PruneTarget{TargetKind::kMacs, red},
                                       popt);
          } catch (const ValueError& e) {  // out of reach for this criterion (e.g. bn without batch norm)
            out["status"] = "n/a";
            out["reason"] = e.what();
            return out;
          }
          GraphModule pruned = prune_channels(model, deps, sol.plan);
          const double secs = finetune_pruned(pruned, opt.train(), opt.finetune_epochs(), s,
                                              path_join(dir, "finetune"), opt.progress(), train);
          const double acc = evaluate(pruned, test, eval_batch).accuracy;
          save_model(path_join(dir, "model.nnopt"), pruned,
                     json{{"prune", {{"source", opt.checkpoint()}, {"criterion", crit}, {"macs", red}}}}.dump());
          out["status"] = "ok";
          out["accuracy"] = acc;
          out["drop_pt"] = 100 * (ref_acc - acc);
          out["params"] = pruned->graph().num_params();
          out["macs"] = pruned->graph().macs();
          out["macs_removed"] = 1.0 - static_cast<double>(pruned->graph().macs()) / static_cast<double>(base_macs);
          out["finetune_seconds"] = secs;
          out["plan"] = json::parse(sol.plan.to_json());
          out.update(latency_fields(
              latency_vs_reference({&model, &pruned}, {1, 64}, opt.latency_rounds(), opt.latency_repeats()), 1));
          return out;
        });
        if (r.value("status", "") != "ok") {
          cell.ok = false;
          if (cell.reason.empty()) cell.reason = r.value("reason", std::string("failed"));
        } else {
          cell.acc.push_back(100 * r.at("accuracy").get<double>());
          cell.params.push_back(r.at("params").get<double>());
          cell.macs.push_back(r.at("macs").get<double>());
          cell.ms_b1.push_back(r.at("latency_ms_b1").get<double>());
          cell.ms_b64.push_back(r.at("latency_ms_b64").get<double>());
          cell.sp_b1.push_back(r.at("speedup_b1").get<double>());
          cell.sp_b64.push_back(r.at("speedup_b64").get<double>());
        }
        r.erase("plan");
        runs.push_back(r);
      }
    }
  }

  // Best of each column over the criteria that ran (ties all marked).
  std::map<double, std::vector<double>> best;  // reduction -> per column
  for (double red : reductions) {
    std::vector<double> b(kNumColumns, NAN);
    for (size_t col = 0; col < kNumColumns; ++col)
      for (const auto& crit : criteria) {
        const Cell& c = cells[crit][red];
        if (!c.ok) continue;
        const double v = column_value(c, col);
        if (std::isnan(b[col]) || (kColumns[col].higher ? v > b[col] : v < b[col])) b[col] = v;
      }
    best[red] = b;
  }

  std::vector<std::string> cols{"criterion"};
  for (double red : reductions)
    for (const auto& c : kColumns) cols.push_back(str_cat(reduction_label(red), " ", c.name));
  PruneCompareResult out;
  out.table = Table(cols);
  {
    std::vector<std::string> row{"unpruned"};
    for (size_t i = 0; i < reductions.size(); ++i) {
      row.push_back(fmt(100 * ref_acc, 2));
      row.push_back(fmt(ref.at("params").get<double>() / 1e3, 1));
      row.push_back(fmt(ref.at("macs").get<double>() / 1e6, 2));
      row.push_back(fmt(ref.at("latency_ms_b1").get<double>(), 2));
      row.push_back(fmt(ref.at("latency_ms_b64").get<double>(), 2));
    }
    out.table.add_row(row);
  }
  json rows = json::array(), best_json = json::object();
  std::vector<std::string> notes;
  for (const auto& crit : criteria) {
    std::vector<std::string> row{crit};
    json jcells = json::object();
    for (double red : reductions) {
      const Cell& c = cells[crit][red];
      json jc = {{"status", c.ok ? "ok" : "n/a"}};
      if (!c.ok) {
        for (size_t col = 0; col < kNumColumns; ++col) row.push_back("n/a");
        jc["reason"] = c.reason;
        notes.push_back(str_cat(crit, " at ", reduction_label(red), " MACs: n/a: ", c.reason));
      } else {
        json marks = json::array();
        for (size_t col = 0; col < kNumColumns; ++col) {
          const bool is_best = std::abs(column_value(c, col) - best[red][col]) < 1e-9;
          row.push_back(column_text(c, col, ref_acc) + (is_best ? " *" : ""));
          if (is_best) marks.push_back(kColumns[col].name);
        }
        const MeanStd acc = mean_std(c.acc);
        jc.update({{"accuracy_pct", {{"mean", acc.mean}, {"std", acc.std}, {"per_seed", c.acc}}},
                   {"drop_pt", 100 * ref_acc - acc.mean},
                   {"params", Cell::mean(c.params)},
                   {"macs", Cell::mean(c.macs)},
                   {"latency_ms_b1", Cell::mean(c.ms_b1)},
                   {"latency_ms_b64", Cell::mean(c.ms_b64)},
                   {"speedup_b1", Cell::mean(c.sp_b1)},
                   {"speedup_b64", Cell::mean(c.sp_b64)},
                   {"best", marks}});
      }
      jcells[reduction_tag(red)] = jc;
    }
    out.table.add_row(row);
    rows.push_back({{"criterion", crit}, {"cells", jcells}});
  }
  for (double red : reductions) {
    json b = json::object();
    for (size_t col = 0; col < kNumColumns; ++col) {
      json names = json::array();
      for (const auto& crit : criteria) {
        const Cell& c = cells[crit][red];
        if (c.ok && std::abs(column_value(c, col) - best[red][col]) < 1e-9) names.push_back(crit);
      }
      b[kColumns[col].name] = names;
    }
    best_json[reduction_tag(red)] = b;
  }

  out.text = str_cat("compare prune: ", opt.checkpoint(), " on ", test.name, " (", test.size(),
                     " test images): unpruned ", percent(ref_acc), ", ", ref.at("params").get<int64_t>(), " params, ",
                     fmt(static_cast<double>(base_macs) / 1e6, 2), " M MACs\n", "protocol: ",
                     opt.global() ? "global ranking" : "the same fraction of every group", ", at most ",
                     opt.max_group_ratio(), " of a group; fine-tune ", opt.finetune_epochs(), " epoch(s), lr ",
                     opt.train().lr(), ", batch ", opt.train().batch_size(), "; seeds ", [&] {
                       std::vector<std::string> v;
                       for (auto s : opt.seeds()) v.push_back(std::to_string(s));
                       return join(v, ",");
                     }(), "\n",
                     "columns per MAC reduction (-R% = the fraction of MACs removed): test accuracy % (drop vs "
                     "unpruned in points), parameters (K), MACs (M), latency ms at batch 1 / 64 (speed-up over the "
                     "unpruned model, timed in alternating rounds); * = best of the column\n",
                     out.table.to_text());
  for (const auto& n : notes) out.text += "  " + n + "\n";
  out.json = {{"protocol", protocol},
              {"unpruned", ref},
              {"criteria", criteria},
              {"macs", reductions},
              {"seeds", opt.seeds()},
              {"rows", rows},
              {"best", best_json},
              {"runs", runs},
              {"runs_done", study.runs_done()},
              {"runs_skipped", study.runs_skipped()}};
  write_study_outputs(opt.out_dir(), "compare", out.text, out.table, out.json);
  return out;
}

}  // namespace nnopt
