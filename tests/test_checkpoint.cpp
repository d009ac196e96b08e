#include <fstream>

#include "nnopt/core/error.h"
#include "nnopt/nn/checkpoint.h"
#include "test_util.h"

using namespace nnopt;
using nnopt::test::temp_dir;

namespace {
Graph small_graph() {
  Graph g;
  g.input("input", {1, 8, 8});
  g.conv2d("features.conv", "input", 4, 3, 1, 1);
  g.batch_norm("features.bn", "features.conv");
  g.unary("features.relu", OpKind::kReLU, "features.bn");
  g.flatten("flat", "features.relu");
  g.linear("fc", "flat", 3);
  return g;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f << bytes;
}
}  // namespace

TEST(Checkpoint, RoundTripKeepsGraphTensorsAndMeta) {
  auto dir = temp_dir("ck_roundtrip");
  torch::manual_seed(0);
  GraphModule m(small_graph());
  m->node_module("features.bn").running_mean.uniform_(-1, 1);
  save_model(dir + "/m.nnopt", m, R"({"note": "x"})");
  std::string meta;
  GraphModule back = load_model(dir + "/m.nnopt", &meta);
  EXPECT_TRUE(back->graph() == m->graph());
  EXPECT_NE(meta.find("\"note\""), std::string::npos);
  auto a = m->state(), b = back->state();
  ASSERT_EQ(a.size(), b.size());
  for (auto& [k, v] : a) EXPECT_TRUE(v.equal(b.at(k))) << k;
  m->eval();
  back->eval();
  auto x = torch::randn({2, 1, 8, 8});
  EXPECT_TRUE(m->forward(x).equal(back->forward(x)));
  // Atomic write leaves no temp file behind.
  for (const auto& e : std::filesystem::directory_iterator(dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos);
}

TEST(Checkpoint, BadFilesGiveClearErrors) {
  auto dir = temp_dir("ck_bad");
  GraphModule m(small_graph());
  Checkpoint ck{m->graph(), m->state(), "{}"};
  std::string good = checkpoint_bytes(ck);

  EXPECT_THROW_MSG(load_checkpoint(dir + "/missing.nnopt"), FileError, "no such file");

  write_bytes(dir + "/short", "NNOPT");
  EXPECT_THROW_MSG(load_checkpoint(dir + "/short"), FileError, "too short");

  write_bytes(dir + "/foreign", std::string("PK\x03\x04") + std::string(100, 'x'));
  EXPECT_THROW_MSG(load_checkpoint(dir + "/foreign"), FileError, "wrong magic");

  write_bytes(dir + "/trunc", good.substr(0, good.size() - 10));
  EXPECT_THROW_MSG(load_checkpoint(dir + "/trunc"), FileError, "truncated");

  write_bytes(dir + "/trunc_header", good.substr(0, 40));
  EXPECT_THROW_MSG(load_checkpoint(dir + "/trunc_header"), FileError, "header claims");

  std::string absurd = good;
  uint64_t huge = 1ULL << 62;
  std::memcpy(&absurd[8], &huge, 8);
  write_bytes(dir + "/absurd", absurd);
  EXPECT_THROW_MSG(load_checkpoint(dir + "/absurd"), FileError, "header claims");

  std::string flipped = good;
  flipped[flipped.size() - 3] ^= 0x55;
  write_bytes(dir + "/flipped", flipped);
  EXPECT_THROW_MSG(load_checkpoint(dir + "/flipped"), FileError, "checksum");

  // The file name is in every message.
  try {
    load_checkpoint(dir + "/foreign");
  } catch (const FileError& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/foreign"), std::string::npos);
  }
}

TEST(Checkpoint, StateMismatchNamesTheTensor) {
  GraphModule m(small_graph());
  auto st = m->state();
  st["fc.weight"] = torch::zeros({5, 5});
  EXPECT_THROW_MSG(m->load_state(st), ValueError, "fc.weight");
  st = m->state();
  st["extra.weight"] = torch::zeros({1});
  EXPECT_THROW_MSG(m->load_state(st), ValueError, "extra.weight");
}
