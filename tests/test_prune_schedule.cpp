// Pruning schedules: values as pure functions of the step (prune/schedule.h).
#include <gtest/gtest.h>

#include <cmath>

#include "nnopt/core/error.h"
#include "nnopt/prune/schedule.h"
#include "test_util.h"

using namespace nnopt;

TEST(PruneSchedule, OneshotAndSfpHoldTheTargetFromTheBeginStep) {
  auto s = PruneSchedule("oneshot", 0.7).begin_step(5);
  EXPECT_EQ(s.at(0), 0.0);
  EXPECT_EQ(s.at(4), 0.0);
  EXPECT_EQ(s.at(5), 0.7);
  EXPECT_EQ(s.at(100000), 0.7);
  EXPECT_EQ(PruneSchedule("sfp", 0.3).at(0), 0.3);
  EXPECT_EQ(s.update_steps(), std::vector<int64_t>{5});
}

TEST(PruneSchedule, AgpIsZhuAndGuptasCubicUpdatedEveryFrequencySteps) {
  auto s = PruneSchedule("agp", 0.9).begin_step(0).end_step(100).frequency(10);
  EXPECT_DOUBLE_EQ(s.at(0), 0.0);
  EXPECT_DOUBLE_EQ(s.at(9), 0.0);  // held until the next update
  EXPECT_NEAR(s.at(10), 0.9 * (1 - std::pow(0.9, 3)), 1e-12);
  EXPECT_NEAR(s.at(50), 0.9 * (1 - 0.125), 1e-12);
  EXPECT_NEAR(s.at(59), 0.9 * (1 - 0.125), 1e-12);
  EXPECT_DOUBLE_EQ(s.at(100), 0.9);
  EXPECT_DOUBLE_EQ(s.at(5000), 0.9);
  // s_i > 0: starts there.
  auto t = PruneSchedule("agp", 0.8).initial(0.2).begin_step(10).end_step(20);
  EXPECT_DOUBLE_EQ(t.at(9), 0.0);
  EXPECT_DOUBLE_EQ(t.at(10), 0.2);
  EXPECT_NEAR(t.at(15), 0.8 + (0.2 - 0.8) * 0.125, 1e-12);
  // Fast early, slow late: the increments shrink.
  double prev = 0, prev_inc = 1;
  for (int64_t k = 1; k <= 10; ++k) {
    double v = s.at(10 * k), inc = v - prev;
    EXPECT_GT(inc, 0);
    EXPECT_LT(inc, prev_inc);
    prev = v;
    prev_inc = inc;
  }
  EXPECT_EQ(s.update_steps().size(), 11u);  // 0, 10, ..., 100
}

TEST(PruneSchedule, IterativeRemovesTheSameShareOfWhatIsLeftEachRound) {
  auto s = PruneSchedule("iterative", 0.75).begin_step(0).end_step(100).cycles(2);
  EXPECT_NEAR(s.at(0), 0.5, 1e-12);  // kept 0.25^(1/2)
  EXPECT_NEAR(s.at(49), 0.5, 1e-12);
  EXPECT_NEAR(s.at(50), 0.75, 1e-12);
  EXPECT_NEAR(s.at(1000), 0.75, 1e-12);
  auto r = PruneSchedule("iterative", 0.9).end_step(90).cycles(3);
  EXPECT_NEAR(r.at(30), 1 - std::pow(0.1, 2.0 / 3), 1e-12);
  EXPECT_EQ(r.update_steps(), (std::vector<int64_t>{0, 30, 60}));
}

TEST(PruneSchedule, GradualIsALinearRamp) {
  auto s = PruneSchedule("gradual", 0.6).begin_step(10).end_step(110).frequency(10);
  EXPECT_EQ(s.at(5), 0.0);
  EXPECT_DOUBLE_EQ(s.at(10), 0.0);
  EXPECT_NEAR(s.at(60), 0.3, 1e-12);
  EXPECT_NEAR(s.at(65), 0.3, 1e-12);
  EXPECT_DOUBLE_EQ(s.at(110), 0.6);
}

TEST(PruneSchedule, BadSchedulesAreClearErrors) {
  EXPECT_THROW_MSG(PruneSchedule("cubic", 0.5).validate(), ValueError,
                   "unknown pruning schedule 'cubic' (known: oneshot, iterative, agp, sfp, gradual)");
  EXPECT_THROW_MSG(PruneSchedule("agp", 1.0).validate(), ValueError, "target must be in [0, 1), got 1");
  EXPECT_THROW_MSG(PruneSchedule("agp", 0.5).begin_step(10).end_step(10).validate(), ValueError,
                   "end_step (10) must be after begin_step (10)");
  EXPECT_THROW_MSG(PruneSchedule("agp", 0.5).initial(0.6).validate(), ValueError, "initial");
  EXPECT_THROW_MSG(PruneSchedule("agp", 0.5).frequency(0).validate(), ValueError, "frequency");
}
