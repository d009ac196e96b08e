// nnopt prune on a tiny model and synthetic data (apps/nnopt/cmd_prune.cpp).
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>

#include "nnopt/core/file_util.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/prune/sparse_checkpoint.h"
#include "nnopt/prune/unstructured.h"
#include "test_util.h"

using namespace nnopt;
using json = nlohmann::json;

namespace {

class PruneCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir("prune_cli");
    ModelOptions o;
    o.width = 0.5;
    torch::manual_seed(0);
    GraphModule m(build_model("resnet8", o));
    ckpt_ = path_join(dir_, "r8.nnopt");
    save_model(ckpt_, m);
  }
  test::CmdResult prune(const std::string& args) {
    return test::run_cli("prune '" + ckpt_ + "' --dataset synthetic --limit 128 --batch-size 32 --max-batches 2 "
                         "--progress off --latency-rounds 1 --latency-repeats 3 --threads 1 " + args, dir_);
  }
  std::string dir_, ckpt_;
};

struct ErrorCase {
  std::string args, text;
};

int64_t count(const std::string& text, const std::string& what) {
  int64_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

// Each case exits with code 2 and one error line (after progress lines, if
// the run got that far) that holds the expected text.
void expect_one_line_errors(const std::function<test::CmdResult(const std::string&)>& run,
                            const std::vector<ErrorCase>& cases) {
  for (const ErrorCase& c : cases) {
    auto r = run(c.args);
    EXPECT_EQ(r.code, 2) << c.args;
    EXPECT_NE(r.err.find(c.text), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(count(r.err, "nnopt: "), 1) << r.err;
  }
}

}  // namespace

TEST_F(PruneCli, ChannelPruningShrinksTheModelAndReportsBeforeAndAfter) {
  auto r = prune("--criterion l1 --granularity channel --target macs=0.4 --schedule oneshot "
                 "--finetune-epochs 1 --json --out '" + path_join(dir_, "ch") + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_LE(j["after"]["macs"].get<double>(), 0.6 * j["before"]["macs"].get<double>());
  EXPECT_LT(j["after"]["params"].get<int64_t>(), j["before"]["params"].get<int64_t>());
  for (const char* k : {"latency_ms_b1", "latency_ms_b64", "test_accuracy", "size_bytes"})
    EXPECT_GT(j["after"][k].get<double>(), 0) << k;
  EXPECT_TRUE(j.contains("speedup_b64"));
  // The pruned checkpoint is an ordinary one, smaller than the original.
  GraphModule m = load_model(path_join(dir_, "ch/model.nnopt"));
  EXPECT_EQ(m->graph().macs(), j["after"]["macs"].get<int64_t>());
  EXPECT_LT(file_size(path_join(dir_, "ch/model.nnopt")), file_size(ckpt_));
  EXPECT_TRUE(path_exists(path_join(dir_, "ch/finetune/metrics.jsonl")));
  // Human output: the before/after table.
  auto h = prune("--criterion hrank --target params=0.3 --importance-batches 1 --out '" + path_join(dir_, "h") + "'");
  ASSERT_EQ(h.code, 0) << h.err;
  for (const char* row : {"params", "MACs", "size (bytes)", "latency b1 (ms", "latency b64 BN folded (ms", "test accuracy"})
    EXPECT_NE(h.out.find(row), std::string::npos) << row << "\n" << h.out;
}

TEST_F(PruneCli, GradualChannelPruningDuringTrainingTaughtByTheUnprunedModel) {
  auto r = prune("--criterion taylor --target macs=0.3 --schedule gradual --finetune-epochs 2 "
                 "--importance-batches 1 --distill kd:T=2,alpha=0.5 --json --out '" + path_join(dir_, "g") + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_LE(j["after"]["macs"].get<double>(), 0.7 * j["before"]["macs"].get<double>() + 1);
  // The teacher's term is in every logged step of the fine-tune.
  std::string metrics = read_file(path_join(dir_, "g/finetune/metrics.jsonl"));
  EXPECT_GE(count(metrics, "\"loss_kd\""), 2) << metrics;
  EXPECT_EQ(json::parse(read_file(path_join(dir_, "g/prune.json")))["distill"], "kd:T=2,alpha=0.5");
}

TEST_F(PruneCli, UnstructuredAgpWritesACompressedCheckpoint) {
  auto r = prune("--criterion magnitude --granularity unstructured --target sparsity=0.9 --schedule agp "
                 "--finetune-epochs 2 --json --out '" + path_join(dir_, "u") + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_NEAR(j["weight_sparsity"].get<double>(), 0.9, 0.01);
  GraphModule m = load_sparse_model(path_join(dir_, "u/model.sparse.nnopt"));
  EXPECT_NEAR(weight_sparsity(m), 0.9, 0.01);
  EXPECT_EQ(j["after"]["macs"], j["before"]["macs"]);  // zeros do not remove MACs
  EXPECT_GE(static_cast<double>(file_size(path_join(dir_, "u/model.nnopt"))) /
                file_size(path_join(dir_, "u/model.sparse.nnopt")),
            2.5);  // a tiny model: the graph header weighs; resnet20 is tested for 5x
  auto nm = prune("--criterion magnitude --granularity 2:4 --json --out '" + path_join(dir_, "nm") + "'");
  ASSERT_EQ(nm.code, 0) << nm.err;
  EXPECT_GT(json::parse(nm.out)["weight_sparsity"].get<double>(), 0.45);
}

TEST_F(PruneCli, ChannelCountsByGroupDropABranchAndThinAStage) {
  auto r = prune("--criterion l1 --keep layer1.0.conv1=0,layer3.0.conv2=24 --json --out '" + path_join(dir_, "k") + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_LT(j["after"]["macs"].get<double>(), j["before"]["macs"].get<double>());
  GraphModule m = load_model(path_join(dir_, "k/model.nnopt"));
  EXPECT_FALSE(m->graph().contains("layer1.0.conv1"));
  EXPECT_EQ(m->graph().node("layer3.0.conv2").shape[0], 24);
  json info = json::parse(read_file(path_join(dir_, "k/prune.json")));
  EXPECT_EQ(info["keep"], "layer1.0.conv1=0,layer3.0.conv2=24");
  EXPECT_EQ(info["target"], "keep");
  std::string out = " --out '" + path_join(dir_, "kx") + "'";
  expect_one_line_errors([&](const std::string& args) { return prune(args + out); },
                         {
                             {"--keep layer1.0.conv1=4 --target macs=0.5", "give either --keep or --target"},
                             {"--keep layer1.0.conv1=4 --schedule agp --finetune-epochs 1", "needs --granularity channel and --schedule oneshot"},
                             {"--keep layer1.0.conv1", "is not GROUP=COUNT"},
                             {"--keep layer1.0.conv1=-2", "is not a channel count >= 0"},
                             {"--keep layer1.0.conv1=2,layer1.0.conv1=3", "group 'layer1.0.conv1' is named twice"},
                             {"--keep layer9.conv1=2", "no dependency group named 'layer9.conv1' (groups: conv1,"},
                             {"--keep conv1=0", "group 'conv1' cannot keep 0 channels"},
                             {"--keep conv1=99", "cannot keep 99"},
                         });
}

TEST_F(PruneCli, BadRequestsAreOneLineErrors) {
  std::string out = " --out '" + path_join(dir_, "x") + "'";
  expect_one_line_errors([&](const std::string& args) { return prune(args + out); },
                         {
                             {"--target sparsity=1", "must be in [0, 1)"},
                             {"--target macs=0.5 --criterion foo", "unknown pruning criterion 'foo' (known: l1, l2"},
                             {"--target macs=0.5 --criterion magnitude", "use --granularity unstructured or 2:4"},
                             {"--target macs=0.5 --criterion l1 --granularity unstructured", "ranks channels"},
                             {"--target macs=0.5 --criterion magnitude --granularity unstructured",
                              "needs --granularity channel"},
                             {"--target macs=0.5 --schedule agp", "give --finetune-epochs"},
                             {"--target macs=0.5 --schedule cubic", "unknown pruning schedule 'cubic'"},
                             {"--target latency=0.000001", "is below the minimum"},
                             {"", "--target KIND=VALUE is required"},
                             {"--target macs=0.5 --finetune-epochs 1 --distill foo",
                              "unknown distillation loss 'foo'"},
                             {"--target macs=0.5 --distill kd", "acts while fine-tuning"},
                         });
}

// ---- nnopt prune search and nnopt compare prune (prune/search_study.h, prune/compare.h) ----

namespace {

class PruneStudyCli : public PruneCli {
 protected:
  const std::string data_ = " --dataset synthetic --limit 256 --batch-size 32 --max-batches 2 --threads 1 "
                            "--latency-rounds 1 --latency-repeats 3 ";
  test::CmdResult search(const std::string& args) {
    return test::run_cli("prune search '" + ckpt_ + "'" + data_ +
                             "--colony 2 --cycles 1 --fitness-limit 128 --val-size 64 --finetune-epochs 1 " + args,
                         dir_);
  }
  test::CmdResult compare(const std::string& args) {
    return test::run_cli("compare prune '" + ckpt_ + "'" + data_ + "--progress lines " + args, dir_);
  }
};

}  // namespace

TEST_F(PruneStudyCli, SearchFindsAStructureWithinBudgetAndComparesWithUniform) {
  const std::string out = path_join(dir_, "s");
  const std::string kd = " --distill kd:T=2,alpha=0.5";  // the final fine-tunes are taught by the unpruned model
  auto r = search("--target macs=0.5 --seeds 0,1 --compare-uniform --progress lines --json --out '" + out + "'" + kd);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j, json::parse(read_file(path_join(out, "search.json"))));
  EXPECT_EQ(j["protocol"]["distill"], "kd:T=2,alpha=0.5");
  for (const char* f : {"seed0/search/metrics.jsonl", "seed1/uniform/metrics.jsonl"})
    EXPECT_NE(read_file(path_join(out, f)).find("\"loss_kd\""), std::string::npos) << f;
  const int64_t base_macs = j["unpruned"]["macs"].get<int64_t>();
  ASSERT_EQ(j["seeds"].size(), 2u);
  int64_t evaluations = 0;
  std::vector<double> diffs;
  for (const auto& s : j["seeds"]) {
    const json& w = s["search"];
    EXPECT_LE(w["macs_kept"].get<double>(), 0.5 + 1e-12);
    EXPECT_GE(w["evaluations"].get<int64_t>(), 2 + 2 * 2);  // initial colony + employed + onlookers
    evaluations += w["evaluations"].get<int64_t>();
    GraphModule m = load_model(w["model"].get<std::string>());
    EXPECT_EQ(m->graph().macs(), w["macs"].get<int64_t>());
    EXPECT_LT(m->graph().macs(), base_macs);
    // Uniform: at most the winner's MACs, each group cut by the same fraction.
    const json& u = s["uniform"];
    EXPECT_LE(u["macs"].get<int64_t>(), w["macs"].get<int64_t>());
    EXPECT_TRUE(path_exists(u["model"].get<std::string>()));
    for (const auto& g : u["channels"].items()) {  // levels 10: at most 0.9 of a group removed
      const double of = g.value()["of"].get<double>(), kept = g.value()["kept"].get<double>();
      EXPECT_NEAR((of - kept) / of, u["level"].get<double>() * 0.9, 1.0 / of + 1e-9) << g.key();
    }
    EXPECT_NEAR(s["diff_pt"].get<double>(),
                100 * (w["test_accuracy"].get<double>() - u["test_accuracy"].get<double>()), 1e-9);
    diffs.push_back(s["diff_pt"].get<double>());
    for (const char* k : {"latency_ms_b1", "latency_ms_b64", "speedup_b1", "speedup_b64", "deployed_latency_ms_b1",
                          "deployed_latency_ms_b64", "deployed_speedup_b1", "deployed_speedup_b64"}) {
      EXPECT_GT(w[k].get<double>(), 0) << k;
      EXPECT_GT(u[k].get<double>(), 0) << k;
    }
  }
  EXPECT_NEAR(j["summary"]["diff_pt"]["mean"].get<double>(), (diffs[0] + diffs[1]) / 2, 1e-9);
  EXPECT_EQ(j["summary"]["diff_pt"]["n"].get<int64_t>(), 2);
  // A progress line for every fitness evaluation.
  EXPECT_EQ(count(r.err, ": evaluation "), evaluations) << r.err;
  // Human output: per-seed rows and the mean row.
  auto h = search("--target macs=0.5 --seeds 0,1 --compare-uniform --progress off --out '" + out + "'" + kd);
  ASSERT_EQ(h.code, 0) << h.err;
  for (const char* t : {"search acc %", "uniform acc %", "search - uniform (pt)", "mean"})
    EXPECT_NE(h.out.find(t), std::string::npos) << t << "\n" << h.out;
}

// A latency budget: every candidate's predicted speed-up (per-conv latency
// table) holds at both batch sizes; the tables are kept in the study folder
// and reused by a second run.
TEST_F(PruneStudyCli, SearchKeepsALatencyBudgetAtEveryBatch) {
  const std::string out = path_join(dir_, "lat");
  const std::string args =
      "--target macs=0.3,speedup=1.25 --latency-batch 4,16 --progress lines --json --out '" + out + "'";
  auto r = search(args);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["protocol"]["latency_budget"]["min_speedup"].get<double>(), 1.25);
  const json& w = j["seeds"][0]["search"];
  EXPECT_LE(w["macs_kept"].get<double>(), 0.7 + 1e-12);
  for (const char* b : {"b4", "b16"}) {
    EXPECT_GE(w["predicted_latency"][b]["speedup"].get<double>(), 1.25 - 1e-9) << b;
    EXPECT_GT(w["predicted_latency"][b]["ms"].get<double>(), 0) << b;
  }
  // Every evaluation line states the predicted speed-ups, each within the budget.
  size_t pos = 0;
  int64_t lines = 0;
  while ((pos = r.err.find("(predicted b4 ", pos)) != std::string::npos) {
    pos += 14;
    const double b4 = std::stod(r.err.substr(pos));
    const size_t p8 = r.err.find(", b16 ", pos);
    ASSERT_NE(p8, std::string::npos);
    const double b16 = std::stod(r.err.substr(p8 + 6));
    EXPECT_GE(b4, 1.25 - 0.006);  // printed with 2 decimals
    EXPECT_GE(b16, 1.25 - 0.006);
    ++lines;
  }
  EXPECT_EQ(lines, w["evaluations"].get<int64_t>()) << r.err;
  for (const char* b : {"latency_b4", "latency_b16"}) {
    json t = json::parse(read_file(path_join(out, std::string(b) + "/result.json")));
    EXPECT_EQ(t["kind"], "conv latency table");
    EXPECT_GT(t["shapes"].size(), 3u) << b;  // extended with the shapes the search met
  }
  for (const char* t : {"predicted b4", "predicted b16", "latency budget at batch 4"})
    EXPECT_NE(read_file(path_join(out, "search.txt")).find(t), std::string::npos) << t;
  // The tables are reused: a second seed times no table again.
  auto more = search("--target macs=0.3,speedup=1.25 --latency-batch 4,16 --seeds 0,1 --progress lines --out '" +
                     out + "'");
  ASSERT_EQ(more.code, 0) << more.err;
  EXPECT_EQ(count(more.err, "latency table"), 0) << more.err;
  // Another thread count than the tables were timed with is refused.
  auto other = search("--target macs=0.3,speedup=1.25 --latency-batch 4,16 --seeds 0,1 --threads 2 --progress off --out '" +
                      out + "'");
  EXPECT_EQ(other.code, 2);
  EXPECT_NE(other.err.find("was timed with 1 threads, this run uses 2"), std::string::npos) << other.err;
}

TEST_F(PruneStudyCli, SearchResumesFromItsFitnessMemo) {
  const std::string out = path_join(dir_, "r");
  const std::string args = "--target macs=0.4 --progress lines --json --out '" + out + "'";
  auto first = search(args);
  ASSERT_EQ(first.code, 0) << first.err;
  json a = json::parse(first.out);
  // Finished: nothing runs again.
  auto again = search(args);
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(json::parse(again.out)["runs_done"].get<int64_t>(), 0);
  EXPECT_EQ(count(again.err, ": evaluation "), 0) << again.err;
  // An interrupted seed replays its colony from the memo: no retraining, the same winner.
  ASSERT_EQ(std::remove(path_join(out, "seed0/result.json").c_str()), 0);
  auto resumed = search(args);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  json b = json::parse(resumed.out);
  EXPECT_EQ(b["runs_done"].get<int64_t>(), 1);
  EXPECT_EQ(b["seeds"][0]["search"]["trained_evaluations"].get<int64_t>(), 0);
  EXPECT_EQ(count(resumed.err, "(cached)"), count(resumed.err, ": evaluation ")) << resumed.err;
  EXPECT_EQ(b["seeds"][0]["search"]["levels"], a["seeds"][0]["search"]["levels"]);
  EXPECT_EQ(b["seeds"][0]["search"]["test_accuracy"], a["seeds"][0]["search"]["test_accuracy"]);
  // Another protocol in the same folder is refused.
  auto other = search("--target macs=0.5 --progress off --out '" + out + "'");
  EXPECT_EQ(other.code, 2);
  EXPECT_NE(other.err.find("holds a study whose 'macs' was 0.4"), std::string::npos) << other.err;
}

TEST_F(PruneStudyCli, CompareWritesEveryCriterionAtEveryReductionAndResumes) {
  const std::string out = path_join(dir_, "c");
  const std::string args = "--criteria l1,bn,random --macs 0.3,0.5 --finetune-epochs 1 --json --out '" + out + "'";
  auto r = compare(args);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["runs_done"].get<int64_t>(), 1 + 3 * 2);  // the unpruned reference + every cell
  EXPECT_EQ(count(r.err, "compare prune: run "), 3 * 2) << r.err;
  ASSERT_EQ(j["rows"].size(), 3u);
  const double base_macs = j["unpruned"]["macs"].get<double>();
  for (const auto& run : j["runs"]) {
    ASSERT_EQ(run["status"], "ok") << run.dump();
    EXPECT_LE(run["macs"].get<double>(), (1 - run["macs_target"].get<double>()) * base_macs + 1e-9) << run.dump();
    EXPECT_GT(run["speedup_b64"].get<double>(), 0);
  }
  for (const char* tag : {"macs30", "macs50"}) {  // every column has a best
    for (const char* col : {"acc % (drop)", "params K", "MACs M", "b1 ms (x)", "b64 ms (x)"})
      EXPECT_FALSE(j["best"][tag][col].empty()) << tag << " " << col;
  }
  // The files: one CSV line per criterion + the unpruned row + the header.
  const std::string csv = read_file(path_join(out, "compare.csv"));
  EXPECT_EQ(count(csv, "\n"), 1 + 1 + 3) << csv;
  const std::string txt = read_file(path_join(out, "compare.txt"));
  for (const char* row : {"unpruned", "l1", "bn", "random", "-30% acc % (drop)", "-50% b64 ms (x)", " *"})
    EXPECT_NE(txt.find(row), std::string::npos) << row << "\n" << txt;
  // Resume: finished runs are skipped; a removed result is run again.
  ASSERT_EQ(std::remove(path_join(out, "bn/macs50/seed0/result.json").c_str()), 0);
  auto again = compare(args);
  ASSERT_EQ(again.code, 0) << again.err;
  json k = json::parse(again.out);
  EXPECT_EQ(k["runs_done"].get<int64_t>(), 1);
  EXPECT_EQ(k["runs_skipped"].get<int64_t>(), 1 + 3 * 2 - 1);
  EXPECT_EQ(count(again.err, "compare prune: run "), 1) << again.err;
  auto other = compare("--criteria l1 --macs 0.3 --finetune-epochs 2 --out '" + out + "'");
  EXPECT_EQ(other.code, 2);
  EXPECT_NE(other.err.find("'finetune_epochs' was 1, now 2"), std::string::npos) << other.err;
}

TEST_F(PruneStudyCli, BadSearchAndCompareRequestsAreOneLineErrors) {
  const std::string out = " --out '" + path_join(dir_, "bad") + "'";
  expect_one_line_errors([&](const std::string& args) { return search(args + out); },
                         {
                             {"--target macs=1.5", "must be in [0, 1)"},
                             {"--target macs=0", "no budget: give a MAC reduction"},
                             {"--target speedup=0.5", "minimum speed-up must be > 1"},
                             {"--target macs=0.5,speedup=x", "speedup=x: 'x' is not a number"},
                             {"--target speedup=1.5 --latency-batch 0", "not a list of positive integers"},
                             {"--target speedup=1000 --latency-batch 2",
                              "latency b2 (predicted ms) budget"},
                             {"--target macs=0.5 --colony 0", "colony must be >= 2, got 0"},
                             {"--target params=0.5", "give macs=F, latency=MS and/or speedup=S"},
                             {"--target macs=0.999", "is out of reach: the smallest structure"},
                             {"--target macs=0.5 --criterion foo", "unknown pruning criterion 'foo'"},
                             {"--target macs=0.5 --seeds 0,0", "seed 0 is given twice"},
                             {"--target macs=0.5 --val-size 100000", "leaves no training images"},
                         });
  expect_one_line_errors([&](const std::string& args) { return compare(args + " --progress off" + out); },
                         {
                             {"--macs 1.5", "MAC reduction 1.5 must be in (0, 1)"},
                             {"--macs 0.5,0.5", "0.5 is given twice"},
                             {"--macs half", "'half' is not a fraction"},
                             {"--criteria l1,foo", "unknown pruning criterion 'foo' (known: "},
                             {"--criteria l1,l1", "criterion 'l1' is given twice"},
                             {"--seeds 0,x", "--seeds: '0,x' is not a list"},
                         });
}
