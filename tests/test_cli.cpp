// The nnopt command line, run as a user would: exit codes, one-line errors,
// config files, outputs, and a training run killed with SIGKILL and resumed.
#include <signal.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "test_util.h"

using nnopt::read_file;
using nnopt::test::run_cli;
using nnopt::test::temp_dir;
using json = nlohmann::json;

namespace {
int count_lines(const std::string& s) { return static_cast<int>(std::count(s.begin(), s.end(), '\n')); }

void expect_usage_error(const std::string& args, const std::string& text, const std::string& tmp) {
  auto r = run_cli(args, tmp);
  EXPECT_EQ(r.code, 2) << args << "\nstderr: " << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << args << "\nstderr: " << r.err;
  EXPECT_NE(r.err.find(text), std::string::npos) << args << "\nstderr: " << r.err;
}

json last_metrics(const std::string& dir) {
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line, last;
  while (std::getline(f, line))
    if (!line.empty()) last = line;
  return json::parse(last);
}
}  // namespace

TEST(Cli, BadUsageExitsTwoWithOneLine) {
  auto tmp = temp_dir("cli_bad");
  expect_usage_error("train --model mlp --epochs -3", "--epochs", tmp);
  expect_usage_error("train --model mlp --bogus 1", "bogus", tmp);
  expect_usage_error("frobnicate", "subcommand", tmp);
  expect_usage_error("eval " + tmp + "/missing.nnopt", tmp + "/missing.nnopt", tmp);
  expect_usage_error("train --model nosuchnet --dataset synthetic --limit 64 --epochs 1 --out " + tmp,
                     "unknown model", tmp);
  expect_usage_error("train --model mlp --dataset cifar --epochs 1", "cifar", tmp);
  expect_usage_error("train --model mlp --dataset mnist --data-dir " + tmp + "/nodir --epochs 1",
                     tmp + "/nodir", tmp);
  expect_usage_error("train --model mlp --lr 0 --epochs 1", "--lr", tmp);
  expect_usage_error("profile", "CHECKPOINT or --model", tmp);
  expect_usage_error("import " + tmp + "/x.pt", "--input-shape", tmp);
  expect_usage_error("profile --model lenet5 --input-shape 1,x,28", "--input-shape", tmp);
  std::ofstream(tmp + "/notck.nnopt") << "hello";
  expect_usage_error("eval " + tmp + "/notck.nnopt --dataset synthetic", "not an nnopt checkpoint",
                     tmp);
  auto help = run_cli("train --help", tmp);
  EXPECT_EQ(help.code, 0);
  EXPECT_NE(help.out.find("--epochs"), std::string::npos);
}

TEST(Cli, ConfigFilesAndFlagsOverride) {
  auto tmp = temp_dir("cli_config");
  std::ofstream(tmp + "/bad.yaml") << "model: mlp\nepochz: 3\n";
  expect_usage_error("train --config " + tmp + "/bad.yaml", "unknown key 'epochz'", tmp);
  std::ofstream(tmp + "/broken.json") << "{\"epochs\": [1,";
  expect_usage_error("train --config " + tmp + "/broken.json", "does not parse", tmp);
  std::ofstream(tmp + "/range.json") << "{\"model\": \"mlp\", \"epochs\": 0}";
  expect_usage_error("train --config " + tmp + "/range.json", "epochs", tmp);

  std::ofstream(tmp + "/ok.yaml") << "model: mlp\ndataset: synthetic\nlimit: 512\nepochs: 5\n"
                                     "batch_size: 64\nlr: 0.05\nnesterov: true\nprogress: off\n";
  auto r = run_cli("train --config " + tmp + "/ok.yaml --epochs 2 --json --out " + tmp + "/run", tmp);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["epochs"], 2);  // the flag won over the file
  EXPECT_GT(j["test_accuracy"].get<double>(), 0.5);
  std::string metrics = read_file(tmp + "/run/metrics.jsonl");
  EXPECT_EQ(count_lines(metrics), 2);

  // eval of the written model gives the accuracy train reported.
  auto e = run_cli("eval " + tmp + "/run/model.nnopt --dataset synthetic --limit 512 --json", tmp);
  ASSERT_EQ(e.code, 0) << e.err;
  EXPECT_NEAR(json::parse(e.out)["accuracy"].get<double>(), j["test_accuracy"].get<double>(), 1e-9);

  std::ofstream(tmp + "/ok.json") << R"({"model": "lenet5", "batch": 8, "repeats": 3})";
  auto p = run_cli("profile --config " + tmp + "/ok.json --json", tmp);
  ASSERT_EQ(p.code, 0) << p.err;
  json pj = json::parse(p.out);
  EXPECT_GT(pj["params"].get<int64_t>(), 40000);
  EXPECT_EQ(pj["latency"].size(), 2u);
  EXPECT_EQ(pj["latency"][1]["batch"], 8);

  // Deployed form: BN folded, conv kernels tuned per batch size (a table per batch with --layers).
  auto t = run_cli("profile --model resnet20 --fold-bn --tune --layers --batch 4 --repeats 3", tmp);
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.out.find("conv kernels at batch 1, "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("conv kernels at batch 4, "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("batch 4: "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find(" thread(s), "), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("layer3.2.conv2"), std::string::npos) << t.out;
  EXPECT_NE(t.out.find("latency b=4"), std::string::npos) << t.out;
  EXPECT_EQ(t.out.find("batch_norm"), std::string::npos) << "BN not folded:\n" << t.out;
}

TEST(Cli, KilledTrainingResumesToTheSameResult) {
  auto tmp = temp_dir("cli_kill");
  std::string common =
      "train --model lenet5 --dataset synthetic --limit 3000 --epochs 4 --batch-size 32 "
      "--lr 0.02 --crop-padding 2 --hflip --seed 5 --threads 2 --progress lines --out ";
  auto full = run_cli(common + tmp + "/full", tmp);
  ASSERT_EQ(full.code, 0) << full.err;

  // Start the same run in the background, kill it with SIGKILL once it has checkpointed.
  std::string run = tmp + "/killed";
  std::string cmd = std::string(NNOPT_CLI) + " " + common + run + " >/dev/null 2>&1 & echo $! > " +
                    tmp + "/pid";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  pid_t pid = std::stoi(read_file(tmp + "/pid"));
  int lines = 0;
  // Up to 5 min for the first epoch (a loaded machine took over 60 s); the loop
  // ends as soon as it is written.
  for (int i = 0; i < 30000 && lines < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (nnopt::path_exists(run + "/metrics.jsonl")) lines = count_lines(read_file(run + "/metrics.jsonl"));
  }
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  for (int i = 0; i < 500 && ::kill(pid, 0) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  int done = count_lines(read_file(run + "/metrics.jsonl"));
  ASSERT_GE(done, 1);
  ASSERT_LT(done, 4) << "the run finished before it could be killed; make it longer";

  auto resumed = run_cli(common + run + " --resume", tmp);
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("resuming from"), std::string::npos);
  json a = last_metrics(tmp + "/full"), b = last_metrics(run);
  EXPECT_EQ(a["epoch"], 3);
  EXPECT_EQ(b["epoch"], 3);
  for (const char* k : {"train_loss", "train_acc", "val_loss", "val_acc", "lr"})
    EXPECT_EQ(a[k], b[k]) << k;
  EXPECT_EQ(count_lines(read_file(run + "/metrics.jsonl")), 4);
}

TEST(Cli, DemoPrintsTheTable) {
  if (!nnopt::path_exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  auto tmp = temp_dir("cli_demo");
  auto j = run_cli("demo --limit 2000 --epochs 2 --progress off --json --out " + tmp + "/demo", tmp);
  ASSERT_EQ(j.code, 0) << j.err;
  auto parsed = json::parse(j.out);
  EXPECT_GT(parsed["test_accuracy"].get<double>(), 0.5);
  std::map<std::string, json> rows;
  for (const auto& row : parsed["rows"]) rows[row["variant"].get<std::string>()] = row;
  for (const char* v : {"fp32", "fp32, trained alone", "fp32, distilled from lenet5",
                        "int8 PTQ (W8A8, onednn)", "W4A4 LSQ QAT (fake-quant)",
                        "pruned (L1, channels) + fine-tuned"})
    ASSERT_TRUE(rows.count(v)) << v << "\n" << parsed.dump();
  for (const char* col : {"test acc %", "params", "MACs", "size KiB", "b1 ms", "b64 ms"})
    EXPECT_TRUE(rows["fp32"].contains(col)) << col;
  EXPECT_EQ(rows["fp32"]["params"].get<int64_t>(), 61706) << "lenet5 parameter count";
  // The compressed variants are smaller than the fp32 model.
  const double fp32_kib = rows["fp32"]["size KiB"].get<double>();
  EXPECT_LT(rows["int8 PTQ (W8A8, onednn)"]["size KiB"].get<double>(), fp32_kib / 3);
  EXPECT_LT(rows["W4A4 LSQ QAT (fake-quant)"]["size KiB"].get<double>(), fp32_kib / 6);
  EXPECT_LT(rows["pruned (L1, channels) + fine-tuned"]["MACs"].get<double>(),
            0.55 * rows["fp32"]["MACs"].get<double>());
  EXPECT_LT(rows["fp32, trained alone"]["params"].get<double>(), 61706 / 3.0);
}

TEST(Cli, ExportImportRoundTripKeepsAccuracy) {
  auto tmp = temp_dir("cli_export");
  auto t = run_cli("train --model lenet5 --dataset synthetic --limit 600 --epochs 1 --progress off --out " +
                       tmp + "/run",
                   tmp);
  ASSERT_EQ(t.code, 0) << t.err;
  auto e = run_cli("export " + tmp + "/run/model.nnopt --format torchscript --out " + tmp + "/m.pt", tmp);
  ASSERT_EQ(e.code, 0) << e.err;
  auto i = run_cli("import " + tmp + "/m.pt --input-shape 1,28,28 --json --out " + tmp + "/back.nnopt", tmp);
  ASSERT_EQ(i.code, 0) << i.err;
  EXPECT_EQ(json::parse(i.out)["params"], 61706);
  auto a = run_cli("eval " + tmp + "/run/model.nnopt --dataset synthetic --limit 600 --json", tmp);
  auto b = run_cli("eval " + tmp + "/back.nnopt --dataset synthetic --limit 600 --json", tmp);
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_NEAR(json::parse(a.out)["loss"].get<double>(), json::parse(b.out)["loss"].get<double>(), 1e-5);
  EXPECT_EQ(json::parse(a.out)["accuracy"], json::parse(b.out)["accuracy"]);
  std::ofstream(tmp + "/junk.pt") << "not a zip";
  expect_usage_error("import " + tmp + "/junk.pt --input-shape 1,28,28 --out " + tmp + "/x.nnopt",
                     tmp + "/junk.pt", tmp);
  EXPECT_FALSE(nnopt::path_exists(tmp + "/x.nnopt"));
}
