// compare_distill; see compare.h.
#include "nnopt/distill/compare.h"

#include <algorithm>
#include <cmath>
#include <iostream>
#include <set>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/distill/distill_callback.h"
#include "nnopt/distill/teacher.h"
#include "nnopt/distill/teacher_cache.h"
#include "nnopt/models/zoo.h"
#include "nnopt/pipeline/study.h"

namespace nnopt {
using json = nlohmann::json;

const StringList& distill_compare_methods() {
  static const StringList m{"alone", "kd", "kd-nolabel", "hint", "at", "sp", "ensemble"};
  return m;
}

namespace {

bool is_checkpoint_path(const std::string& s) {
  auto ends = [&](const char* suf) {
    const std::string x(suf);
    return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
  };
  return path_exists(s) || ends(".nnopt") || ends(".pt");
}

StringList methods_of(const DistillCompareOptions& o) {
  if (!o.methods().empty()) return o.methods();
  StringList m;
  for (const auto& name : distill_compare_methods())
    if (name != "ensemble" || !o.ensemble().empty()) m.push_back(name);
  return m;
}

LossSpec kd_spec(const DistillCompareOptions& o, bool label_free) {
  LossSpec s = parse_loss_spec(o.kd());
  if (label_free) {
    auto it = std::find_if(s.params.begin(), s.params.end(), [](const auto& p) { return p.first == "alpha"; });
    if (it == s.params.end()) s.params.emplace_back("alpha", "1");
    else it->second = "1";
  }
  return s;
}

GraphModule make_student(const DistillCompareOptions& o, const Dataset& train, int64_t seed) {
  seed_everything(static_cast<uint64_t>(seed));
  if (is_checkpoint_path(o.student())) {
    GraphModule m = load_teacher_model(o.student(), train.shape());
    m->train();
    return m;
  }
  ModelOptions mo;
  mo.input_shape = train.shape();
  mo.num_classes = train.num_classes;
  mo.width = o.width();
  mo.depth = o.depth();
  return GraphModule(build_model(o.student(), mo));
}

}  // namespace

void DistillCompareOptions::validate() const {
  NNOPT_CHECK(!teacher().empty(), ValueError, "compare distill: --teacher CKPT is required");
  NNOPT_CHECK(!out_dir().empty(), ValueError, "compare distill: no output folder (--out DIR)");
  NNOPT_CHECK(!seeds().empty(), ValueError, "compare distill: no seeds given");
  std::set<int64_t> seen;
  for (int64_t s : seeds())
    NNOPT_CHECK(seen.insert(s).second, ValueError, "compare distill: seed ", s, " is given twice");
  std::set<std::string> ms;
  for (const auto& m : methods()) {
    const auto& known = distill_compare_methods();
    NNOPT_CHECK(std::find(known.begin(), known.end(), m) != known.end(), ValueError,
                "compare distill: unknown method '", m,
                "' (known: alone, kd, kd-nolabel, hint, at, sp, ensemble)");
    NNOPT_CHECK(ms.insert(m).second, ValueError, "compare distill: method '", m, "' is given twice");
  }
  NNOPT_CHECK(!ms.count("ensemble") || ensemble().size() >= 2, ValueError,
              "compare distill: method 'ensemble' needs --ensemble with at least 2 checkpoints");
  ensemble_mode_from_name(ensemble_mode());
  LossSpec s = parse_loss_spec(kd());
  NNOPT_CHECK(s.name == "kd", ValueError, "compare distill: --kd must be a kd spec, got '", kd(), "'");
  make_distill_loss(s);  // unknown keys and bad values fail here
  for (const auto& p : pairs()) parse_tap_pair(p, "--pairs");
  train().validate();
}

TapPair default_feature_pair(const Graph& teacher, const Graph& student) {
  auto last_map = [](const Graph& g, const char* who) {
    std::string best;
    for (const auto& n : g.nodes()) {
      if (n.op == OpKind::kGlobalAvgPool || n.op == OpKind::kFlatten || n.op == OpKind::kLinear) break;
      if (n.op != OpKind::kInput && n.shape.size() == 3) best = n.name;
    }
    NNOPT_CHECK(!best.empty(), ValueError, "compare distill: the ", who,
                " has no feature map [C, H, W] before its classifier; give --pairs");
    return best;
  };
  return TapPair{last_map(teacher, "teacher"), last_map(student, "student")};
}

DistillCompareResult compare_distill(const DistillCompareOptions& opt, const Dataset& train,
                                     const Dataset& test) {
  opt.validate();
  const StringList methods = methods_of(opt);
  TeacherPtr teacher = load_teacher({opt.teacher()}, train.shape());
  TeacherPtr ensemble;
  if (std::count(methods.begin(), methods.end(), "ensemble"))
    ensemble = load_teacher(opt.ensemble(), train.shape(), ensemble_mode_from_name(opt.ensemble_mode()));

  // One cache per teacher for the whole study: each training sample's teacher
  // outputs are computed once (batches are unaugmented unless the recipe says
  // otherwise, and then DistillCallback does not cache).
  auto teacher_cache = std::make_shared<TeacherCache>(int64_t(6) << 30);
  auto ensemble_cache = std::make_shared<TeacherCache>(int64_t(1) << 30);
  std::vector<TapPair> pairs;
  for (const auto& p : opt.pairs()) pairs.push_back(parse_tap_pair(p, "--pairs"));
  const bool feature_methods = std::any_of(methods.begin(), methods.end(), [](const std::string& m) {
    return m == "hint" || m == "at" || m == "sp";
  });
  if (pairs.empty() && feature_methods) {
    GraphModule probe = make_student(opt, train, 0);
    pairs.push_back(default_feature_pair(teacher->graph(), probe->graph()));
  }
  // What must be equal across all runs of this folder.
  json protocol = {{"kind", "compare distill"},
                   {"teacher", opt.teacher()},
                   {"ensemble", opt.ensemble()},
                   {"ensemble_mode", opt.ensemble_mode()},
                   {"student", opt.student()},
                   {"width", opt.width()},
                   {"depth", opt.depth()},
                   {"kd", opt.kd()},
                   {"pairs", [&] {
                      StringList v;
                      for (const auto& p : pairs) v.push_back(p.teacher + ":" + p.student);
                      return v;
                    }()},
                   {"data", train.name},
                   {"train_size", train.size()},
                   {"test_size", test.size()},
                   {"train", train_options_json(opt.train())}};
  protocol["train"].erase("seed");
  Study study(opt.out_dir(), protocol);

  auto specs_of = [&](const std::string& m) -> std::vector<LossSpec> {
    if (m == "kd" || m == "ensemble") return {kd_spec(opt, false)};
    if (m == "kd-nolabel") return {kd_spec(opt, true)};
    if (m == "hint" || m == "at" || m == "sp") return {LossSpec{m, {}, pairs}};
    return {};
  };
  auto losses_text = [&](const std::string& m) {
    if (m == "alone") return std::string("ce");
    std::string t;
    for (const auto& s : specs_of(m)) {
      t += s.to_string();
      for (const auto& p : s.taps) t += " " + p.teacher + ":" + p.student;
    }
    if (m == "kd-nolabel") return t + " (no labels)";
    if (m == "ensemble") return t + " from " + std::to_string(opt.ensemble().size()) + " teachers";
    if (m == "hint" || m == "at" || m == "sp") return "ce + " + t;
    return t + " + ce";
  };

  const int64_t total = static_cast<int64_t>(methods.size() * opt.seeds().size());
  int64_t k = 0;
  std::map<std::string, std::vector<json>> results;
  for (int64_t seed : opt.seeds()) {
    for (const auto& m : methods) {
      ++k;
      const std::string name = m + "/seed" + std::to_string(seed);
      if (!study.finished(name))
        std::cerr << "compare distill: run " << k << "/" << total << ": " << m << ", seed " << seed
                  << std::endl;
      json r = study.run(name, [&](const std::string& dir) {
        GraphModule student = make_student(opt, train, seed);
        TrainOptions t = opt.train();
        t.seed(static_cast<uint64_t>(seed)).out_dir(dir).resume(true);
        Trainer trainer(student, t);
        if (m != "alone") {
          std::vector<DistillLossPtr> losses;
          for (const auto& s : specs_of(m)) losses.push_back(make_distill_loss(s));
          DistillOptions dopt;
          dopt.shared_cache(m == "ensemble" ? ensemble_cache : teacher_cache);
          if (m == "kd-nolabel") dopt.ce_weight(0);
          trainer.add_callback(std::make_shared<DistillCallback>(
              student, m == "ensemble" ? ensemble : teacher, std::move(losses), dopt));
        }
        TrainResult tr = trainer.fit(train);
        EvalResult ev = evaluate(student, test, t.eval_batch_size());
        double secs = 0;
        for (const auto& e : tr.history) secs += e.seconds;
        return json{{"method", m}, {"seed", seed}, {"test_acc", ev.accuracy},
                    {"test_loss", ev.loss}, {"train_seconds", secs}};
      });
      results[m].push_back(r);
    }
  }

  // Aggregate.
  std::map<std::string, MeanStd> acc;
  for (const auto& m : methods) {
    std::vector<double> v;
    for (const auto& r : results[m]) v.push_back(100 * r.at("test_acc").get<double>());
    acc[m] = mean_std(v);
  }
  std::string best = methods.front();
  for (const auto& m : methods)
    if (acc[m].mean > acc[best].mean) best = m;
  const bool has_alone = acc.count("alone") > 0;

  DistillCompareResult out;
  out.table = Table({"method", "losses", "test acc %", "vs alone (pt)", "seeds", "per seed %",
                     "train s/run"});
  json rows = json::array();
  for (const auto& m : methods) {
    const MeanStd& a = acc[m];
    std::string per_seed;
    double secs = 0;
    std::vector<double> accs;
    for (const auto& r : results[m]) {
      const double v = 100 * r.at("test_acc").get<double>();
      accs.push_back(v);
      per_seed += (per_seed.empty() ? "" : " ") + fmt(v, 2);
      secs += r.at("train_seconds").get<double>();
    }
    secs /= static_cast<double>(results[m].size());
    const double delta = has_alone ? a.mean - acc["alone"].mean : std::nan("");
    out.table.add_row({m, losses_text(m), format_mean_std(a) + (m == best ? " *" : ""),
                       has_alone && m != "alone" ? (delta >= 0 ? "+" : "") + fmt(delta, 2) : "",
                       std::to_string(a.n), per_seed, fmt(secs, 1)});
    rows.push_back({{"method", m}, {"losses", losses_text(m)}, {"test_acc_mean", a.mean},
                    {"test_acc_std", a.std}, {"seeds", a.n}, {"test_acc_per_seed", accs},
                    {"vs_alone_pt", has_alone ? json(delta) : json(nullptr)},
                    {"train_seconds_mean", secs}, {"best", m == best}});
  }
  out.json = {{"protocol", protocol}, {"seeds", opt.seeds()}, {"rows", rows},
              {"runs_done", study.runs_done()}, {"runs_skipped", study.runs_skipped()}};
  write_study_outputs(opt.out_dir(), "compare", out.table.to_text(), out.table, out.json);
  return out;
}

}  // namespace nnopt
