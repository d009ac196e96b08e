#pragma once
// FusedSGD: torch::optim::SGD (same options, same state, same checkpoint
// format) whose step updates each float32 contiguous parameter in one pass:
//   d = g + wd * w;  b = (first step ? d : momentum * b + (1 - dampening) * d);
//   d = nesterov ? d + momentum * b : b;  w -= lr * d
// LibTorch's SGD runs the same formula as four to six separate tensor ops per
// parameter (each a pass over memory, a kernel dispatch and an OpenMP region,
// plus two temporaries); on small models such as lenet5 these dispatches are
// a visible share of the training step. Other dtypes and layouts fall back
// to the op-by-op formula. Values agree with torch::optim::SGD up to float
// rounding (ATen may contract `a + alpha * b` into a fused multiply-add).
//
// Example:
//   nnopt::FusedSGD opt(model->parameters(),
//                       torch::optim::SGDOptions(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4));
//   loss.backward(); opt.step();
#include <torch/optim/sgd.h>

#include <vector>

namespace nnopt {

class FusedSGD : public torch::optim::SGD {
 public:
  FusedSGD(std::vector<torch::Tensor> params, torch::optim::SGDOptions defaults)
      : torch::optim::SGD(std::move(params), defaults) {}
  torch::Tensor step(LossClosure closure = nullptr) override;
};

}  // namespace nnopt
