// Per-conv latency lookup table (prune/latency_table.h): the unpruned
// prediction is the measured model, shapes are timed once, a plan that
// removes most channels predicts less time, bad options are refused.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "nnopt/core/error.h"
#include "nnopt/models/zoo.h"
#include "nnopt/prune/latency_table.h"
#include "test_util.h"

using namespace nnopt;

namespace {
// Removes the first `frac` of every group's channels.
ChannelPlan remove_fraction(const DependencyGraph& deps, double frac) {
  ChannelPlan p;
  for (const auto& g : deps.groups()) {
    int64_t n = static_cast<int64_t>(frac * static_cast<double>(g.size()));
    if (n <= 0) continue;
    for (int64_t i = 0; i < n; ++i) p.remove[g.name].push_back(i);
  }
  return p;
}
}  // namespace

TEST(PruneLatencyTable, PredictsTheUnprunedModelAndTimesEachShapeOnce) {
  torch::manual_seed(0);
  Graph g = build_model("resnet20");
  DependencyGraph deps(g);
  ConvLatencyTable lut(deps, ConvLatencyTable::Options().batch(16).rounds(1).repeats(5));
  const double full = lut.predict(ChannelPlan());
  EXPECT_GT(lut.measured_full_ms(), 0);
  // The non-conv time is the measured model minus the convs (clamped at 0).
  EXPECT_GE(full, lut.measured_full_ms() * (1 - 1e-9));
  // resnet20 has 21 convs but fewer distinct shapes (repeated blocks).
  const int64_t shapes = lut.shapes_timed();
  EXPECT_GT(shapes, 3);
  EXPECT_LT(shapes, 21);
  EXPECT_EQ(lut.predict(ChannelPlan()), full);
  EXPECT_EQ(lut.shapes_timed(), shapes);
  // Three quarters of every group removed: ~1/16 of the MACs, far less time.
  auto small = remove_fraction(deps, 0.75);
  const double ms = lut.predict(small);
  EXPECT_GT(lut.shapes_timed(), shapes);
  EXPECT_GT(ms, 0);
  EXPECT_LT(ms, full);
}

// A saved table predicts the same without timing anything; a table of
// another model or a foreign JSON is refused.
TEST(PruneLatencyTable, SavedTableRoundTripsWithoutTiming) {
  torch::manual_seed(0);
  DependencyGraph deps(build_model("lenet5"));
  ConvLatencyTable lut(deps, ConvLatencyTable::Options().batch(4).rounds(1).repeats(3));
  auto half = remove_fraction(deps, 0.5);
  const double full = lut.predict(ChannelPlan()), ms = lut.predict(half);
  nlohmann::json j = lut.to_json();
  EXPECT_EQ(j["batch"].get<int64_t>(), 4);
  EXPECT_EQ(j["shapes"].size(), static_cast<size_t>(lut.shapes_timed()));
  ConvLatencyTable back = ConvLatencyTable::from_json(deps, nlohmann::json::parse(j.dump()));
  EXPECT_EQ(back.shapes_timed(), lut.shapes_timed());
  EXPECT_EQ(back.predict(ChannelPlan()), full);
  EXPECT_EQ(back.predict(half), ms);
  EXPECT_EQ(back.shapes_timed(), lut.shapes_timed());  // nothing timed again
  EXPECT_EQ(back.measured_full_ms(), lut.measured_full_ms());
  DependencyGraph other(build_model("resnet8"));
  EXPECT_THROW_MSG(ConvLatencyTable::from_json(other, j), ValueError, "the table is of another model");
  EXPECT_THROW_MSG(ConvLatencyTable::from_json(deps, nlohmann::json{{"a", 1}}), ValueError,
                   "is not a conv latency table");
  nlohmann::json cut = j;
  cut.erase("rest_ms");
  EXPECT_THROW_MSG(ConvLatencyTable::from_json(deps, cut), ValueError, "latency table: malformed JSON");
}

TEST(PruneLatencyTable, BadOptionsAreRefused) {
  DependencyGraph deps(build_model("lenet5"));
  try {
    ConvLatencyTable lut(deps, ConvLatencyTable::Options().batch(0));
    FAIL() << "batch 0 accepted";
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("latency table: batch must be >= 1, got 0"), std::string::npos);
  }
  EXPECT_THROW(ConvLatencyTable(deps, ConvLatencyTable::Options().repeats(2)), ValueError);
}
