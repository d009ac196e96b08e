// nnopt prune on a tiny model and synthetic data (apps/nnopt/cmd_prune.cpp).
#include <gtest/gtest.h>

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
                         "--progress off --latency-rounds 1 --latency-repeats 3 " + args, dir_);
  }
  std::string dir_, ckpt_;
};

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

TEST_F(PruneCli, GradualChannelPruningDuringTraining) {
  auto r = prune("--criterion taylor --target macs=0.3 --schedule gradual --finetune-epochs 2 "
                 "--importance-batches 1 --json --out '" + path_join(dir_, "g") + "'");
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_LE(j["after"]["macs"].get<double>(), 0.7 * j["before"]["macs"].get<double>() + 1);
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

TEST_F(PruneCli, BadRequestsAreOneLineErrors) {
  std::string out = " --out '" + path_join(dir_, "x") + "'";
  struct Case {
    std::string args, text;
  };
  for (const Case& c : std::vector<Case>{
           {"--target sparsity=1", "must be in [0, 1)"},
           {"--target macs=0.5 --criterion foo", "unknown pruning criterion 'foo' (known: l1, l2"},
           {"--target macs=0.5 --criterion magnitude", "use --granularity unstructured or 2:4"},
           {"--target macs=0.5 --criterion l1 --granularity unstructured", "ranks channels"},
           {"--target macs=0.5 --criterion magnitude --granularity unstructured", "needs --granularity channel"},
           {"--target macs=0.5 --schedule agp", "give --finetune-epochs"},
           {"--target macs=0.5 --schedule cubic", "unknown pruning schedule 'cubic'"},
           {"--target latency=0.000001", "is below the minimum"},
           {"", "--target KIND=VALUE is required"},
       }) {
    auto r = prune(c.args + out);
    EXPECT_EQ(r.code, 2) << c.args;
    EXPECT_NE(r.err.find(c.text), std::string::npos) << c.args << "\n" << r.err;
    // One error line (after the progress header, if the run got that far).
    EXPECT_EQ(r.err.find("nnopt: "), r.err.rfind("nnopt: ")) << r.err;
  }
}
