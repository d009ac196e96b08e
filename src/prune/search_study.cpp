// prune_search_study; see search_study.h.
#include "nnopt/prune/search_study.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <memory>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/distill/distill_callback.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/pipeline/study.h"
#include "nnopt/prune/criterion.h"
#include "nnopt/prune/latency_table.h"
#include "nnopt/prune/target.h"

namespace nnopt {
using json = nlohmann::json;

void PruneSearchStudyOptions::validate() const {
  NNOPT_CHECK(!checkpoint_.empty(), ValueError, "prune search: no checkpoint given");
  NNOPT_CHECK(!out_dir_.empty(), ValueError, "prune search: no output folder (--out DIR)");
  NNOPT_CHECK(macs_ >= 0 && macs_ < 1, ValueError,
              "prune search: the MAC reduction must be in (0, 1) (the fraction removed), got ", macs_);
  NNOPT_CHECK(min_speedup_ == 0 || min_speedup_ > 1, ValueError,
              "prune search: the minimum speed-up must be > 1 (or 0 = none), got ", min_speedup_);
  NNOPT_CHECK(max_latency_ms_ >= 0, ValueError, "prune search: the latency budget must be > 0 ms (or 0 = none), got ",
              max_latency_ms_);
  NNOPT_CHECK(macs_ > 0 || has_latency_budget(), ValueError,
              "prune search: no budget: give a MAC reduction (macs=F), a latency budget or a minimum speed-up");
  if (has_latency_budget()) {
    NNOPT_CHECK(!latency_batches_.empty(), ValueError, "prune search: a latency budget needs batch sizes");
    for (int64_t b : latency_batches_)
      NNOPT_CHECK(b >= 1, ValueError, "prune search: latency batch sizes must be >= 1, got ", b);
  }
  make_importance(criterion_);  // unknown names fail here, listing the known ones
  NNOPT_CHECK(importance_batches_ >= 1, ValueError, "prune search: importance batches must be >= 1, got ",
              importance_batches_);
  StructureSearchOptions s = search_;
  s.max_macs_ratio(1 - macs_).validate();
  NNOPT_CHECK(fitness_epochs_ >= 1, ValueError, "prune search: fitness epochs must be >= 1, got ", fitness_epochs_);
  NNOPT_CHECK(fitness_limit_ >= 0, ValueError, "prune search: fitness limit must be >= 0 (0 = all), got ",
              fitness_limit_);
  NNOPT_CHECK(val_size_ >= 1, ValueError, "prune search: the validation size must be >= 1, got ", val_size_);
  NNOPT_CHECK(finetune_epochs_ >= 0, ValueError, "prune search: fine-tune epochs must be >= 0, got ",
              finetune_epochs_);
  check_seed_list(seeds_, "prune search");
  NNOPT_CHECK(latency_threads_ >= 0 && latency_threads_ <= 1024, ValueError,
              "prune search: latency threads must be in 0..1024 (0 = the run's), got ", latency_threads_);
  NNOPT_CHECK(latency_rounds_ >= 1, ValueError, "prune search: latency rounds must be >= 1, got ", latency_rounds_);
  NNOPT_CHECK(latency_repeats_ >= 3, ValueError, "prune search: latency repeats must be >= 3, got ",
              latency_repeats_);
  TrainOptions t = train_;
  t.epochs(1).out_dir("").resume(false).validate();
  if (!distill_.empty()) make_distill_loss(parse_loss_spec(distill_));  // unknown losses and keys
}

namespace {

// Channels kept per group, "16,8,12,..." in group order: the memo key of a
// plan (with the scores fixed, the counts determine the plan).
std::string kept_key(const DependencyGraph& deps, const ChannelPlan& plan) {
  std::string key;
  for (const auto& g : deps.groups()) {
    auto it = plan.remove.find(g.name);
    int64_t kept = g.size() - (it == plan.remove.end() ? 0 : static_cast<int64_t>(it->second.size()));
    key += (key.empty() ? "" : ",") + std::to_string(kept);
  }
  return key;
}

json kept_json(const DependencyGraph& deps, const ChannelPlan& plan) {
  json j = json::object();
  for (const auto& g : deps.groups()) {
    auto it = plan.remove.find(g.name);
    j[g.name] = {{"kept", g.size() - (it == plan.remove.end() ? 0 : static_cast<int64_t>(it->second.size()))},
                 {"of", g.size()}};
  }
  return j;
}

// Memoised fitness values of one seed, persisted one JSON line each.
class FitnessMemo {
 public:
  explicit FitnessMemo(std::string path) : path_(std::move(path)) {
    if (!path_exists(path_)) return;
    for (const auto& line : split(read_file(path_), '\n')) {
      if (line.empty()) continue;
      json j;
      try {
        j = json::parse(line);
      } catch (const json::exception&) {
        continue;  // a line cut short by an interruption: evaluate again
      }
      if (j.contains("kept") && j.contains("val_acc")) values_[j["kept"].get<std::string>()] = j["val_acc"];
    }
  }
  bool find(const std::string& key, double* v) const {
    auto it = values_.find(key);
    if (it == values_.end()) return false;
    *v = it->second;
    return true;
  }
  void add(const std::string& key, double v, const json& extra) {
    values_[key] = v;
    json j = extra;
    j["kept"] = key;
    j["val_acc"] = v;
    std::ofstream f(path_, std::ios::app);
    f << j.dump() << "\n";
    f.flush();
    NNOPT_CHECK(f.good(), FileError, path_, ": cannot append a fitness value");
  }

 private:
  std::string path_;
  std::map<std::string, double> values_;
};

json model_json(GraphModule& m, const Dataset& test, int64_t eval_batch, int64_t base_macs) {
  EvalResult ev = evaluate(m, test, eval_batch);
  return {{"test_accuracy", ev.accuracy},
          {"params", m->graph().num_params()},
          {"macs", m->graph().macs()},
          {"macs_kept", static_cast<double>(m->graph().macs()) / static_cast<double>(base_macs)}};
}

std::string lat_cell(const json& r, const char* b, const char* prefix = "") {
  if (!r.contains(str_cat(prefix, "latency_ms_", b))) return "-";  // a result of an older version
  return str_cat(fmt(r.at(str_cat(prefix, "latency_ms_", b)).get<double>(), 2), " (",
                 fmt(r.at(str_cat(prefix, "speedup_", b)).get<double>(), 2), "x)");
}

}  // namespace

PruneSearchStudyResult prune_search_study(const PruneSearchStudyOptions& opt, const Dataset& train,
                                          const Dataset& test, const LineLog& log_fn) {
  opt.validate();
  auto log = [&](const std::string& s) {
    if (log_fn) log_fn(s);
  };
  NNOPT_CHECK(path_exists(opt.checkpoint()), FileError, opt.checkpoint(), ": checkpoint not found");
  GraphModule model = load_model(opt.checkpoint());
  model->eval();
  NNOPT_CHECK(model->graph().input_shape() == train.shape(), ValueError, "prune search: ", opt.checkpoint(),
              " takes ", c10::IntArrayRef(model->graph().input_shape()), " but ", train.name, " samples are ",
              c10::IntArrayRef(train.shape()));
  NNOPT_CHECK(opt.val_size() < train.size(), ValueError, "prune search: the validation size ", opt.val_size(),
              " leaves no training images of ", train.size());
  DependencyGraph deps(model->graph());
  NNOPT_CHECK(!deps.groups().empty(), ValueError, "prune search: ", opt.checkpoint(),
              " has no prunable channel groups");
  const int64_t L = opt.search().levels();
  const int64_t base_macs = model->graph().macs();
  if (opt.macs() > 0) {  // The smallest structure's MACs do not depend on which channels are kept.
    std::vector<torch::Tensor> zeros;
    for (const auto& g : deps.groups()) zeros.push_back(torch::zeros({g.size()}, torch::kDouble));
    const double min_kept =
        static_cast<double>(
            prune_graph(deps, plan_for_structure(deps, zeros, Structure(deps.groups().size(), 1), L)).macs()) /
        static_cast<double>(base_macs);
    NNOPT_CHECK(min_kept <= 1 - opt.macs(), ValueError, "prune search: target macs=", opt.macs(),
                " is out of reach: the smallest structure (1/", L, " of every group's channels) keeps ",
                fmt(min_kept, 4), " of the MACs, so at most macs=", fmt(1 - min_kept, 4), " can be removed");
  }

  const StructureSearchOptions& so = opt.search();
  TrainOptions recipe = opt.train();
  recipe.epochs(std::max<int64_t>(1, opt.finetune_epochs())).seed(0).out_dir("").resume(false);
  json protocol = {{"kind", "prune search"},
                   {"checkpoint", opt.checkpoint()},
                   {"checkpoint_bytes", file_size(opt.checkpoint())},
                   {"data", train.name},
                   {"train_size", train.size()},
                   {"test_size", test.size()},
                   {"macs", opt.macs()},
                   {"criterion", opt.criterion()},
                   {"importance_batches", opt.importance_batches()},
                   {"search", {{"colony", so.colony()}, {"cycles", so.cycles()}, {"limit", so.limit()},
                               {"levels", so.levels()}, {"mutations", so.mutations()}}},
                   {"fitness_epochs", opt.fitness_epochs()},
                   {"fitness_limit", opt.fitness_limit()},
                   {"val_size", opt.val_size()},
                   {"finetune_epochs", opt.finetune_epochs()},
                   {"train", train_options_json(recipe)},
                   {"compare_uniform", opt.compare_uniform()},
                   {"latency", {{"rounds", opt.latency_rounds()}, {"repeats", opt.latency_repeats()}}}};
  if (opt.has_latency_budget())  // only then, so that studies without one keep their protocol
    protocol["latency_budget"] = {{"min_speedup", opt.min_speedup()},
                                  {"max_latency_ms", opt.max_latency_ms()},
                                  {"batches", opt.latency_batches()}};
  if (so.remove_blocks()) protocol["search"]["remove_blocks"] = true;  // only then, as above
  if (!opt.distill().empty()) protocol["distill"] = opt.distill();      // only then, as above
  Study study(opt.out_dir(), protocol);
  // The final fine-tunes' teacher: the unpruned model (eval mode, no grad).
  auto taught = [&](GraphModule& student) {
    std::vector<CallbackPtr> cbs;
    if (!opt.distill().empty()) cbs.push_back(make_distill_callback(model, student, {parse_loss_spec(opt.distill())}));
    return cbs;
  };

  // Latency tables, one per batch size, timed once per study (and extended
  // with the shapes each search met, so a resumed search sees the same values).
  std::vector<std::unique_ptr<ConvLatencyTable>> tables;
  std::vector<double> table_full_ms;
  auto save_table = [&](size_t i) {
    write_file_atomic(path_join(study.run_dir(str_cat("latency_b", tables[i]->batch())), "result.json"),
                      tables[i]->to_json().dump(1));
  };
  const int lat_threads = opt.latency_threads() > 0 ? static_cast<int>(opt.latency_threads()) : threads();
  if (opt.has_latency_budget()) {
    ScopedThreads st(lat_threads);
    for (int64_t b : opt.latency_batches()) {
      const std::string name = str_cat("latency_b", b);
      if (!study.finished(name))
        log(str_cat("prune search: timing every conv of the model at batch ", b, " (latency table)"));
      json j = study.run(name, [&](const std::string&) {
        ConvLatencyTable t(deps, ConvLatencyTable::Options().batch(b).rounds(opt.latency_rounds())
                                     .repeats(std::max<int64_t>(3, opt.latency_repeats() / 2)));
        return t.to_json();
      });
      NNOPT_CHECK(j.value("threads", 0) == lat_threads, ValueError, "prune search: the latency table ",
                  study.run_dir(name), " was timed with ", j.value("threads", 0), " threads, this run uses ",
                  lat_threads, ": give --latency-threads ", j.value("threads", 0), " or another --out");
      tables.push_back(std::make_unique<ConvLatencyTable>(ConvLatencyTable::from_json(deps, j)));
      table_full_ms.push_back(tables.back()->predict(ChannelPlan()));
    }
  }
  std::vector<StructureBudget> budgets;
  for (size_t i = 0; i < tables.size(); ++i) {
    ConvLatencyTable* t = tables[i].get();
    double max = opt.max_latency_ms() > 0 ? opt.max_latency_ms() : table_full_ms[i];
    if (opt.min_speedup() > 0) max = std::min(max, table_full_ms[i] / opt.min_speedup());
    budgets.push_back(StructureBudget{str_cat("latency b", t->batch(), " (predicted ms)"),
                                      [t](const ChannelPlan& p) { return t->predict(p); }, max});
  }
  auto predicted_json = [&](const ChannelPlan& p) {
    json j = json::object();
    for (size_t i = 0; i < tables.size(); ++i) {
      const double ms = tables[i]->predict(p);
      j[str_cat("b", tables[i]->batch())] = {{"ms", ms}, {"speedup", table_full_ms[i] / ms}};
    }
    return j;
  };
  const int64_t eval_batch = opt.train().eval_batch_size();

  json ref = study.run("unpruned", [&](const std::string&) { return model_json(model, test, eval_batch, base_macs); });
  const double ref_acc = ref.at("test_accuracy").get<double>();

  const int64_t expected_evals = so.colony() * (1 + 2 * so.cycles());
  std::vector<json> per_seed;
  for (int64_t seed : opt.seeds()) {
    const std::string name = str_cat("seed", seed);
    if (!study.finished(name)) log(str_cat("prune search: seed ", seed, ": scoring channels (", opt.criterion(), ")"));
    per_seed.push_back(study.run(name, [&](const std::string& dir) {
      const uint64_t s = static_cast<uint64_t>(seed);
      ImportancePtr imp = make_importance(opt.criterion(), ImportanceOptions().seed(s));
      ImportanceData idata;
      if (imp->needs_data()) idata = importance_batches(train, opt.importance_batches(), s);
      const std::vector<torch::Tensor> scores = imp->score(model, deps, idata);

      // Fitness data: held-out validation images, and a subset of the rest to fine-tune on.
      auto split = split_validation(train, opt.val_size(), s);
      Dataset fit_train = split.first, val = split.second;
      if (opt.fitness_limit() > 0 && opt.fitness_limit() < fit_train.size())
        fit_train = fit_train.subset(random_permutation(fit_train.size(), mix_seed(s, 1)).slice(0, 0, opt.fitness_limit()));

      const std::string search_dir = path_join(dir, "search");
      make_dirs(search_dir);
      FitnessMemo memo(path_join(search_dir, "fitness.jsonl"));
      int64_t evals = 0, trained = 0;
      double best = -1, fitness_secs = 0;
      auto fitness = [&](const ChannelPlan& plan) {
        ++evals;
        const std::string key = kept_key(deps, plan);
        double acc = 0;
        const bool cached = memo.find(key, &acc);
        GraphModule cand = nullptr;
        const double t0 = now_seconds();
        if (!cached) {
          cand = prune_channels(model, deps, plan);
          TrainOptions o = opt.train();
          o.epochs(opt.fitness_epochs()).seed(s).out_dir("").resume(false).progress("off");
          Trainer tr(cand, o);
          tr.fit(fit_train);
          acc = evaluate(cand, val, eval_batch).accuracy;
          ++trained;
        }
        const double secs = now_seconds() - t0;
        fitness_secs += secs;
        const double kept = static_cast<double>(prune_graph(deps, plan).macs()) / static_cast<double>(base_macs);
        if (!cached) memo.add(key, acc, {{"evaluation", evals}, {"macs_kept", kept}, {"seconds", secs}});
        best = std::max(best, acc);
        std::string lat;
        for (size_t i = 0; i < tables.size(); ++i)
          lat += str_cat(", b", tables[i]->batch(), " ", fmt(table_full_ms[i] / tables[i]->predict(plan), 2), "x");
        log(str_cat("prune search: seed ", seed, ": evaluation ", evals, "/~", expected_evals, ": keeps ",
                    percent(kept, 1), " of the MACs", lat.empty() ? "" : str_cat(" (predicted", lat.substr(1), ")"),
                    ", val acc ", percent(acc), " (best ", percent(best), ")",
                    cached ? " (cached)" : str_cat(", ", fmt(secs, 1), " s")));
        return acc;
      };
      StructureSearchOptions sopt = so;
      sopt.max_macs_ratio(1 - opt.macs()).seed(s);
      const double t_search = now_seconds();
      StructureSearchResult res = abc_structure_search(deps, scores, fitness, sopt, budgets);
      const double search_secs = now_seconds() - t_search;
      for (size_t i = 0; i < tables.size(); ++i) save_table(i);

      log(str_cat("prune search: seed ", seed, ": fine-tuning the winner (", percent(res.best_macs_ratio, 1),
                  " of the MACs) for ", opt.finetune_epochs(), " epoch(s)"));
      GraphModule winner = prune_channels(model, deps, res.best_plan);
      const double win_secs =
          finetune_pruned(winner, opt.train(), opt.finetune_epochs(), s, search_dir, opt.progress(), train,
                          taught(winner));
      json sj = model_json(winner, test, eval_batch, base_macs);
      json structure = json::object();
      for (size_t g = 0; g < deps.groups().size(); ++g) structure[deps.groups()[g].name] = res.best[g];
      sj["levels"] = structure;
      sj["channels"] = kept_json(deps, res.best_plan);
      sj["plan"] = json::parse(res.best_plan.to_json());
      sj["val_fitness"] = res.best_fitness;
      if (!tables.empty()) sj["predicted_latency"] = predicted_json(res.best_plan);
      sj["best_per_cycle"] = res.best_per_cycle;
      sj["evaluations"] = res.evaluations;
      sj["trained_evaluations"] = trained;
      sj["search_seconds"] = search_secs;
      sj["fitness_seconds"] = fitness_secs;
      sj["finetune_seconds"] = win_secs;
      sj["model"] = path_join(search_dir, "model.nnopt");
      save_model(path_join(search_dir, "model.nnopt"), winner,
                 json{{"prune_search", {{"source", opt.checkpoint()}, {"seed", seed}, {"macs", opt.macs()},
                                        {"plan", sj["plan"]}}}}.dump());

      json r = {{"seed", seed}, {"search", sj}};
      std::vector<GraphModule*> timed{&model, &winner};
      GraphModule uniform_model = nullptr;
      if (opt.compare_uniform()) {
        // The same fraction of every group, at most the winner's MACs.
        ChannelPlannerOptions popt = ChannelPlannerOptions().global(false).max_group_ratio(1.0 - 1.0 / L);
        ChannelSolution sol =
            solve_channel_target(deps, scores, PruneTarget{TargetKind::kMacs, 1 - res.best_macs_ratio}, popt);
        uniform_model = prune_channels(model, deps, sol.plan);
        log(str_cat("prune search: seed ", seed, ": fine-tuning the uniform model (",
                    percent(static_cast<double>(uniform_model->graph().macs()) / base_macs, 1), " of the MACs)"));
        const std::string uni_dir = path_join(dir, "uniform");
        const double uni_secs = finetune_pruned(uniform_model, opt.train(), opt.finetune_epochs(), s, uni_dir,
                                                opt.progress(), train, taught(uniform_model));
        json uj = model_json(uniform_model, test, eval_batch, base_macs);
        uj["level"] = sol.level;
        uj["channels"] = kept_json(deps, sol.plan);
        uj["plan"] = json::parse(sol.plan.to_json());
        uj["finetune_seconds"] = uni_secs;
        uj["model"] = path_join(uni_dir, "model.nnopt");
        make_dirs(uni_dir);
        save_model(path_join(uni_dir, "model.nnopt"), uniform_model,
                   json{{"prune_uniform", {{"source", opt.checkpoint()}, {"seed", seed}, {"plan", uj["plan"]}}}}.dump());
        r["uniform"] = uj;
        r["diff_pt"] = 100 * (sj["test_accuracy"].get<double>() - uj["test_accuracy"].get<double>());
        timed.push_back(&uniform_model);
      }
      log(str_cat("prune search: seed ", seed, ": timing (", opt.latency_rounds(), " alternating rounds)"));
      ScopedThreads st(lat_threads);
      json lat = latency_vs_reference(timed, {1, 64}, opt.latency_rounds(), opt.latency_repeats());
      json dep = deployed_latency_vs_reference(timed, {1, 64}, opt.latency_rounds(), opt.latency_repeats());
      r["latency_threads"] = lat_threads;
      r["unpruned_latency_ms"] = {{"b1", lat["b1"]["ms"][0]}, {"b64", lat["b64"]["ms"][0]}};
      r["unpruned_deployed_latency_ms"] = {{"b1", dep["b1"]["ms"][0]}, {"b64", dep["b64"]["ms"][0]}};
      r["search"].update(latency_fields(lat, 1));
      r["search"].update(latency_fields(dep, 1, "deployed_"));
      if (opt.compare_uniform()) {
        r["uniform"].update(latency_fields(lat, 2));
        r["uniform"].update(latency_fields(dep, 2, "deployed_"));
      }
      return r;
    }));
  }

  // Table: one row per seed, then mean ± std.
  const bool uni = opt.compare_uniform();
  std::vector<std::string> cols{"seed",       "search acc %",    "MACs kept",       "params",
                                "lat b1 ms", "lat b64 ms",      "deployed b1 ms", "deployed b64 ms"};
  const bool pred = !tables.empty();
  if (pred)
    for (const auto& t : tables) cols.push_back(str_cat("predicted b", t->batch()));
  if (uni) {
    for (const char* c : {"uniform acc %", "uniform MACs kept", "uniform params", "uniform b1 ms", "uniform b64 ms",
                          "uniform deployed b1 ms", "uniform deployed b64 ms", "search - uniform (pt)"})
      cols.push_back(c);
  }
  PruneSearchStudyResult out;
  out.table = Table(cols);
  std::vector<double> s_acc, u_acc, diff;
  json seeds_json = json::array();
  auto side_cells = [&](const json& m, std::vector<std::string>& row) {
    row.push_back(fmt(100 * m.at("test_accuracy").get<double>(), 2));
    row.push_back(percent(m.at("macs_kept").get<double>(), 1));
    row.push_back(std::to_string(m.at("params").get<int64_t>()));
    row.push_back(lat_cell(m, "b1"));
    row.push_back(lat_cell(m, "b64"));
    row.push_back(lat_cell(m, "b1", "deployed_"));
    row.push_back(lat_cell(m, "b64", "deployed_"));
  };
  for (const json& r : per_seed) {
    std::vector<std::string> row{std::to_string(r.at("seed").get<int64_t>())};
    side_cells(r.at("search"), row);
    if (pred)
      for (const auto& t : tables)
        row.push_back(str_cat(fmt(r["search"]["predicted_latency"][str_cat("b", t->batch())]["speedup"].get<double>(), 2),
                              "x"));
    s_acc.push_back(100 * r["search"]["test_accuracy"].get<double>());
    if (uni) {
      side_cells(r.at("uniform"), row);
      u_acc.push_back(100 * r["uniform"]["test_accuracy"].get<double>());
      diff.push_back(r.at("diff_pt").get<double>());
      row.push_back(fmt(diff.back(), 2));
    }
    out.table.add_row(row);
    seeds_json.push_back(r);
  }
  json summary = {{"search_accuracy_pct", {{"mean", mean_std(s_acc).mean}, {"std", mean_std(s_acc).std}}}};
  {
    std::vector<std::string> row{"mean", format_mean_std(mean_std(s_acc)), "", "", "", "", "", ""};
    if (pred) row.resize(row.size() + tables.size());
    if (uni) {
      MeanStd u = mean_std(u_acc), d = mean_std(diff);
      for (const auto& c : {format_mean_std(u), std::string(), std::string(), std::string(), std::string(),
                            std::string(), std::string(), format_mean_std(d)})
        row.push_back(c);
      summary["uniform_accuracy_pct"] = {{"mean", u.mean}, {"std", u.std}};
      summary["diff_pt"] = {{"mean", d.mean}, {"std", d.std}, {"n", d.n}, {"per_seed", diff}};
    }
    out.table.add_row(row);
  }
  int64_t lat_threads_used = lat_threads;
  if (!per_seed.empty()) lat_threads_used = per_seed[0].value("latency_threads", lat_threads_used);
  std::string latency_text;
  if (pred) {
    latency_text = "; latency budget at batch";
    for (size_t i = 0; i < tables.size(); ++i)
      latency_text += str_cat(i ? ", " : " ", tables[i]->batch(), " (unpruned predicted ", fmt(table_full_ms[i], 2),
                              " ms)");
    if (opt.min_speedup() > 0) latency_text += str_cat(": predicted speed-up >= ", opt.min_speedup());
    if (opt.max_latency_ms() > 0) latency_text += str_cat(opt.min_speedup() > 0 ? " and" : ":", " <= ",
                                                          opt.max_latency_ms(), " ms");
    latency_text += " (per-conv latency table, tuned kernels, BN folded)";
  }
  out.text = str_cat("prune search: ", opt.checkpoint(), " on ", test.name, " (", test.size(),
                     " test images): unpruned ", percent(ref_acc), ", ", ref.at("params").get<int64_t>(),
                     " params, ", fmt(static_cast<double>(base_macs) / 1e6, 2), " M MACs\n",
                     "protocol: ABC colony ", so.colony(), ", cycles ", so.cycles(), ", limit ", so.limit(),
                     ", levels ", so.levels(), "; target macs=", opt.macs(), " (removed)", latency_text,
                     "; channels kept by ",
                     opt.criterion(), "; fitness = accuracy on ", opt.val_size(),
                     " held-out train images after ", opt.fitness_epochs(), " epoch(s) on ",
                     opt.fitness_limit() > 0 ? std::to_string(opt.fitness_limit()) : std::string("all other"),
                     " train images; winner", uni ? " and uniform" : "", " fine-tuned ", opt.finetune_epochs(),
                     " epoch(s), lr ", opt.train().lr(), "\n",
                     "latency: ms at batch 1 / 64, ", lat_threads_used, " thread(s) (speed-up over the unpruned model, "
                     "timed in alternating rounds); deployed = BN folded, each conv on its faster kernel\n",
                     out.table.to_text());
  out.json = {{"protocol", protocol},
              {"unpruned", ref},
              {"seeds", seeds_json},
              {"summary", summary},
              {"runs_done", study.runs_done()},
              {"runs_skipped", study.runs_skipped()}};
  write_study_outputs(opt.out_dir(), "search", out.text, out.table, out.json);
  return out;
}

}  // namespace nnopt
