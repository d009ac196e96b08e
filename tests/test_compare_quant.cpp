// compare_quant / nnopt compare quant: the table (methods x W/A settings,
// best per column), n/a cells with their reasons, int8 latency at 8/8, the
// Study's resume and protocol check, and the CLI's errors.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/table.h"
#include "nnopt/data/dataset.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/quant/compare.h"
#include "nnopt/train/trainer.h"
#include "test_util.h"

namespace nnopt {
namespace {
using json = nlohmann::json;
using test::temp_dir;

// conv[-bn]-relu x2 -> flatten -> fc on [1, 28, 28] (the CLI's synthetic data).
Graph small_cnn(bool bn) {
  Graph g;
  std::string x = g.input("input", {1, 28, 28});
  x = g.conv2d("conv1", x, 8, 3, 2, 1);
  if (bn) x = g.batch_norm("bn1", x);
  x = g.unary("relu1", OpKind::kReLU, x);
  x = g.conv2d("conv2", x, 16, 3, 2, 1);
  if (bn) x = g.batch_norm("bn2", x);
  x = g.unary("relu2", OpKind::kReLU, x);
  x = g.flatten("flatten", x);  // [16, 7, 7] -> [784]
  g.linear("fc", x, 10);
  return g;
}

// The data of `nnopt ... --dataset synthetic --limit 512` and a model trained on it.
struct CmpSetup {
  std::string dir, ckpt, ckpt_nobn;
  Dataset train = make_synthetic(512, {1, 28, 28}, 10, 1);
  Dataset test = make_synthetic(512, {1, 28, 28}, 10, 2);
  CmpSetup() {
    dir = temp_dir("compare_quant");
    ckpt = dir + "/fp32.nnopt";
    ckpt_nobn = dir + "/nobn.nnopt";
    torch::manual_seed(0);
    GraphModule m(small_cnn(true));
    Trainer t(m, TrainOptions(2).batch_size(64).lr(0.05).weight_decay(0).progress("off").seed(0));
    t.fit(train);
    m->eval();
    save_model(ckpt, m);
    GraphModule plain(small_cnn(false));
    save_model(ckpt_nobn, plain);
  }
};
const CmpSetup& setup() {
  static CmpSetup* s = new CmpSetup();
  return *s;
}

QuantCompareOptions quick(const std::string& out) {
  QuantCompareOptions o;
  o.checkpoint(setup().ckpt).out_dir(out).methods({"minmax", "adaround", "lsq"})
      .settings(parse_quant_settings("8/8,4/4"))
      .latency_options(LatencyOptions{1, 3, 1.0});
  o.quantize().per_channel(true).calib_batches(2).adaround_iters(10);
  o.quantize().train().epochs(1).max_batches(2).batch_size(64).progress("off");
  return o;
}

TEST(CompareQuant, TableMarksBestPerColumnAndResumes) {
  const CmpSetup& S = setup();
  const std::string out = S.dir + "/cmp";
  QuantCompareResult r = compare_quant(quick(out), S.train, S.test);

  // Shape: fp32 row, one row per method, the size row; method, 2 settings, 2 latency columns.
  const auto& rows = r.table.rows();
  ASSERT_EQ(rows.size(), 5u);
  for (const auto& row : rows) ASSERT_EQ(row.size(), 5u);
  EXPECT_EQ(rows[0][0].rfind("fp32 ", 0), 0u) << rows[0][0];
  EXPECT_EQ(rows[1][0], "minmax");
  EXPECT_EQ(rows[2][0], "adaround");
  EXPECT_EQ(rows[3][0], "lsq");
  EXPECT_EQ(rows[4][0], "size KiB");
  EXPECT_EQ(r.json["runs_done"].get<int>(), 6);  // fp32 + 5 (adaround 8/8 is n/a, not run)

  // AdaRound at W8 is n/a with its reason; it is not run.
  EXPECT_EQ(rows[2][1], "n/a");
  const json& ada8 = r.json["rows"][1]["cells"]["8/8"];
  EXPECT_EQ(ada8["status"], "n/a");
  EXPECT_NE(ada8["reason"].get<std::string>().find("<= 4 bits"), std::string::npos) << ada8.dump();
  EXPECT_FALSE(path_exists(out + "/adaround/w8a8"));
  EXPECT_TRUE(path_exists(out + "/adaround/w4a4/result.json"));
  EXPECT_TRUE(path_exists(out + "/lsq/w4a4/qat/checkpoint.nnopt"));
  EXPECT_NE(r.text.find("adaround at 8/8: n/a"), std::string::npos) << r.text;

  // '*' exactly on the smallest drop(s) of each column, recomputed from the JSON.
  const double fp_acc = r.json["fp32"]["accuracy"].get<double>();
  for (int col = 0; col < 2; ++col) {
    const std::string label = col == 0 ? "8/8" : "4/4";
    double best = 1e9;
    for (const auto& row : r.json["rows"]) {
      const json& c = row["cells"][label];
      if (c["status"] == "ok") {
        EXPECT_NEAR(c["drop_pt"].get<double>(), 100 * (fp_acc - c["accuracy"].get<double>()), 1e-9);
        best = std::min(best, c["drop_pt"].get<double>());
      }
    }
    int stars = 0;
    for (int m = 0; m < 3; ++m) {
      const json& c = r.json["rows"][m]["cells"][label];
      const std::string& cell = rows[1 + m][1 + col];
      const bool starred = cell.find('*') != std::string::npos;
      stars += starred;
      EXPECT_EQ(starred, c["status"] == "ok" && std::abs(c["drop_pt"].get<double>() - best) < 1e-9)
          << label << " " << cell;
      EXPECT_EQ(c["best"].get<bool>(), starred);
    }
    EXPECT_GE(stars, 1) << label;
    EXPECT_EQ(r.json["best"][label].size(), static_cast<size_t>(stars));
  }

  // 8/8: the int8 model (kept for the latency pass), its agreement and
  // latency; the fp32 row has fp32 latency.
  const json& mm8 = r.json["rows"][0]["cells"]["8/8"];
  ASSERT_EQ(mm8["int8"]["status"], "ok") << mm8.dump();
  EXPECT_GE(mm8["int8"]["top1_agreement"].get<double>(), 0.98);
  EXPECT_TRUE(path_exists(out + "/minmax/w8a8/int8.nnopt"));
  EXPECT_GT(mm8["int8"]["latency_ms"]["64"].get<double>(), 0.0);
  EXPECT_EQ(mm8["int8"]["latency_ms"], r.json["latency_ms"]["minmax"]);
  EXPECT_GT(r.json["latency_ms"]["fp32"]["1"].get<double>(), 0.0);
  EXPECT_EQ(rows[1][3], fmt(r.json["latency_ms"]["minmax"]["1"].get<double>(), 2));
  EXPECT_EQ(rows[0][4], fmt(r.json["latency_ms"]["fp32"]["64"].get<double>(), 2));
  EXPECT_NE(rows[3][3], "-");  // lsq's int8 model at 8/8
  EXPECT_FALSE(r.json["rows"][0]["cells"]["4/4"].contains("int8"));
  // Sizes: 4-bit weights are smaller than 8-bit ones, both far below fp32.
  const double s8 = r.json["sizes"]["8/8"].get<double>(), s4 = r.json["sizes"]["4/4"].get<double>();
  EXPECT_LT(s4, s8);
  EXPECT_LT(3.0 * s8, r.json["fp32"]["size_bytes"].get<double>());
  for (const char* f : {"compare.txt", "compare.csv", "compare.json", "study.json"})
    EXPECT_TRUE(path_exists(out + "/" + f)) << f;

  // The same call again: everything is finished, nothing runs, the same
  // table but for the latency, which is timed again.
  QuantCompareResult again = compare_quant(quick(out), S.train, S.test);
  EXPECT_EQ(again.json["runs_done"].get<int>(), 0);
  EXPECT_EQ(again.json["runs_skipped"].get<int>(), 6);
  auto without_latency = [](json rows) {
    for (auto& row : rows)
      for (auto& c : row["cells"])
        if (c.contains("int8")) c["int8"].erase("latency_ms");
    return rows;
  };
  EXPECT_EQ(without_latency(again.json["rows"]), without_latency(r.json["rows"]));
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t col = 0; col < 3; ++col) EXPECT_EQ(again.table.rows()[i][col], rows[i][col]);

  // A finished run whose int8 model file is gone: no latency, and a note saying why.
  std::remove((out + "/minmax/w8a8/int8.nnopt").c_str());
  QuantCompareResult gone = compare_quant(quick(out), S.train, S.test);
  EXPECT_EQ(gone.table.rows()[1][3], "-");
  EXPECT_NE(gone.text.find("minmax at 8/8: no latency: " + out + "/minmax/w8a8/int8.nnopt is missing"),
            std::string::npos) << gone.text;
  EXPECT_NE(gone.table.rows()[3][3], "-");

  // Another setting under the same protocol extends the study (only new runs).
  QuantCompareOptions more = quick(out);
  more.methods({"minmax"}).settings(parse_quant_settings("8/8,3/3"));
  QuantCompareResult ext = compare_quant(more, S.train, S.test);
  EXPECT_EQ(ext.json["runs_done"].get<int>(), 1);
  EXPECT_EQ(ext.json["runs_skipped"].get<int>(), 2);

  // Another protocol in the same folder is refused.
  QuantCompareOptions other = quick(out);
  other.quantize().train().epochs(2);
  EXPECT_THROW_MSG(compare_quant(other, S.train, S.test), ValueError, "holds a study whose");
  other = quick(out);
  other.quantize().calib_batches(3);
  EXPECT_THROW_MSG(compare_quant(other, S.train, S.test), ValueError, "calib_batches");
}

TEST(CompareQuant, MethodRefusingTheModelIsNotApplicable) {
  const CmpSetup& S = setup();
  QuantCompareOptions o = quick(S.dir + "/nobn");
  o.checkpoint(S.ckpt_nobn).methods({"dfq", "minmax"}).settings(parse_quant_settings("8/8")).latency(false);
  QuantCompareResult r = compare_quant(o, S.train, S.test);
  const json& dfq = r.json["rows"][0]["cells"]["8/8"];
  EXPECT_EQ(dfq["status"], "n/a");
  EXPECT_NE(dfq["reason"].get<std::string>().find("batch"), std::string::npos) << dfq.dump();
  EXPECT_EQ(r.table.rows()[1][1], "n/a");
  EXPECT_EQ(r.json["rows"][1]["cells"]["8/8"]["status"], "ok");
  EXPECT_NE(r.table.rows()[2][1].find('*'), std::string::npos);  // minmax is the only (best) one
  EXPECT_EQ(r.table.rows()[2][3], "-");                          // no latency asked for
}

TEST(CompareQuant, OptionErrors) {
  EXPECT_THROW_MSG(parse_quant_settings("8/8,4-4"), ValueError, "'4-4' is not W/A like 4/4");
  EXPECT_THROW_MSG(parse_quant_settings("9/8"), ValueError, "bits must be in [2, 8], got 9");
  EXPECT_THROW_MSG(parse_quant_settings("4/1"), ValueError, "bits must be in [2, 8], got 1");
  EXPECT_THROW_MSG(parse_quant_settings("4/x"), ValueError, "'4/x' is not W/A");
  EXPECT_THROW_MSG(parse_quant_settings("4/4,4/4"), ValueError, "4/4 is given twice");
  EXPECT_THROW_MSG(parse_quant_settings(""), ValueError, "no W/A settings");
  QuantCompareOptions o = quick("/tmp/unused");
  o.methods({"minmax", "foo"});
  EXPECT_THROW_MSG(o.validate(), ValueError, "unknown method 'foo' (known: minmax, percentile");
  o = quick("/tmp/unused");
  o.methods({"lsq", "lsq"});
  EXPECT_THROW_MSG(o.validate(), ValueError, "method 'lsq' is given twice");
  o = quick("/tmp/unused");
  o.quantize().calib_batches(0);
  EXPECT_THROW_MSG(o.validate(), ValueError, "calibration needs at least 1 batch, got 0");
  o = quick("/tmp/unused");
  o.quantize().act_observer("foo");  // checked although minmax would not use it
  EXPECT_THROW_MSG(o.validate(), ValueError, "unknown observer 'foo'");
  o = quick("/tmp/unused");
  o.latency_rounds(0);
  EXPECT_THROW_MSG(o.validate(), ValueError, "--latency-rounds must be >= 1, got 0");
  o = quick("");
  EXPECT_THROW_MSG(o.validate(), ValueError, "no output folder");
}

TEST(CompareQuantCli, RunsAndReportsOneLineErrors) {
  const CmpSetup& S = setup();
  const std::string base = "compare quant " + S.ckpt +
                           " --dataset synthetic --limit 512 --calib-batches 2 --epochs 1 "
                           "--max-batches 2 --qat-batch-size 64 --progress off --threads 1 "
                           "--act-observer percentile --no-latency --out " + S.dir + "/cli ";
  auto r = test::run_cli(base + "--methods minmax,pact --bits 8/8,2/2 --json", S.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  ASSERT_EQ(j["rows"].size(), 2u);
  EXPECT_EQ(j["settings"], json({"8/8", "2/2"}));
  EXPECT_EQ(j["rows"][1]["cells"]["2/2"]["status"], "ok");
  EXPECT_EQ(j["protocol"]["first_last_bits"].get<int>(), 8);  // the default
  // --act-observer is the QAT start's observer; minmax stays minmax.
  const std::string mm = read_file(S.dir + "/cli/minmax/w8a8/scales.json");
  EXPECT_NE(mm.find("\"minmax\""), std::string::npos);
  EXPECT_EQ(mm.find("percentile"), std::string::npos) << mm;
  r = test::run_cli(base + "--methods minmax,pact --bits 8/8,2/2", S.dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("W2A2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" *"), std::string::npos) << r.out;
  // From what the quantizers can output: PACT's weights are DoReFa's symmetric grid.
  EXPECT_NE(r.out.find("weight levels at W bits: 2^W for minmax; 2^W - 1 (symmetric around 0) for pact"),
            std::string::npos)
      << r.out;
  struct Case {
    std::string args, msg;
  };
  for (const auto& c : std::vector<Case>{
           {"--methods minmax,foo", "unknown method 'foo' (known: minmax, percentile"},
           {"--bits 8/8,9/9", "--bits: bits must be in [2, 8], got 9"},
           {"--bits 8/8,1/8", "--bits: bits must be in [2, 8], got 1"},
           {"--bits 8-8", "--bits: '8-8' is not W/A like 4/4"},
           {"--calib-batches 0", "calibration needs at least 1 batch, got 0"},
       }) {
    auto e = test::run_cli(base + c.args, S.dir);
    EXPECT_EQ(e.code, 2) << c.args;
    EXPECT_NE(e.err.find(c.msg), std::string::npos) << c.args << ": " << e.err;
    EXPECT_EQ(e.err.find('\n'), e.err.size() - 1) << "one line: " << e.err;
  }
  auto e = test::run_cli("compare quant " + S.dir + "/missing.nnopt --dataset synthetic --limit 64 --out " +
                             S.dir + "/cli2",
                         S.dir);
  EXPECT_EQ(e.code, 2);
  EXPECT_NE(e.err.find("missing.nnopt"), std::string::npos) << e.err;
}

}  // namespace
}  // namespace nnopt
