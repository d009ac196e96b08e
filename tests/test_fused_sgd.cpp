// FusedSGD against torch::optim::SGD: same trajectory, same checkpoint format.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <sstream>

#include "nnopt/train/fused_sgd.h"

namespace {

struct Case {
  double momentum, dampening, wd;
  bool nesterov;
};

// Runs `steps` steps of `opt` on params [a (float, contiguous, large enough
// for several parallel chunks), b (float, non-contiguous: fallback path)],
// with gradients that depend on the current weights.
template <typename Opt>
std::vector<torch::Tensor> trajectory(const Case& c, int steps, bool fused) {
  torch::manual_seed(3);
  auto a = torch::randn({70000}).requires_grad_();
  auto b = torch::randn({8, 6}).t().requires_grad_();  // non-contiguous leaf
  auto o = torch::optim::SGDOptions(0.05).momentum(c.momentum).dampening(c.dampening)
               .weight_decay(c.wd).nesterov(c.nesterov);
  Opt opt({a, b}, o);
  (void)fused;
  for (int s = 0; s < steps; ++s) {
    for (auto* t : {&a, &b}) t->mutable_grad().reset();
    auto loss = (a * a).sum() * 0.5 + (a.sin()).sum() + (b * b * b).sum() * 0.1;
    loss.backward();
    opt.step();
  }
  return {a.detach().clone(), b.detach().clone()};
}

}  // namespace

TEST(FusedSgd, MatchesTorchSgd) {
  for (const Case& c : {Case{0.9, 0, 5e-4, true}, Case{0.9, 0, 5e-4, false}, Case{0.9, 0.1, 0, false},
                        Case{0, 0, 1e-3, false}, Case{0.5, 0, 0, true}}) {
    auto ref = trajectory<torch::optim::SGD>(c, 7, false);
    auto got = trajectory<nnopt::FusedSGD>(c, 7, true);
    for (size_t i = 0; i < ref.size(); ++i) {
      const double diff = (ref[i] - got[i]).abs().max().item<double>();
      EXPECT_LT(diff, 1e-5) << "momentum " << c.momentum << " dampening " << c.dampening << " wd " << c.wd
                            << " nesterov " << c.nesterov << " param " << i;
      // And the parameters did move (the test would pass for a no-op otherwise).
      EXPECT_GT((got[i] - trajectory<nnopt::FusedSGD>(c, 0, true)[i]).abs().max().item<double>(), 1e-3);
    }
  }
}

TEST(FusedSgd, StateRoundTripsThroughTorchSerialization) {
  torch::manual_seed(1);
  auto w = torch::randn({1000}).requires_grad_();
  auto o = torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true);
  nnopt::FusedSGD opt({w}, o);
  w.mutable_grad() = torch::ones_like(w);
  opt.step();
  std::ostringstream out;
  torch::serialize::OutputArchive ar;
  opt.save(ar);
  ar.save_to(out);
  // A plain torch SGD loads the fused optimizer's state and continues alike.
  auto w2 = w.detach().clone().requires_grad_();
  torch::optim::SGD ref({w2}, o);
  std::istringstream in(out.str());
  torch::serialize::InputArchive ia;
  ia.load_from(in);
  ref.load(ia);
  w.mutable_grad() = torch::full_like(w, 0.5);
  w2.mutable_grad() = torch::full_like(w2, 0.5);
  opt.step();
  ref.step();
  EXPECT_LT((w - w2).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(ref.state().size(), 1u);
}
