#pragma once
// Per-layer choice of the convolution kernel for inference.
//
// LibTorch picks a conv kernel by a fixed rule (onednn unless the input is a
// small single image), but which one is faster depends on the layer's shape:
// on this project's 2-core AVX2 machine at batch 64, resnet20's stem conv
// (1 -> 16 channels) takes 2.3 ms on onednn and 0.15 ms on im2col + GEMM,
// while a 64 -> 64 conv at 7x7 takes 0.9 ms on onednn and 2.1 ms on
// im2col + GEMM; and a pruned layer with fewer channels can flip the choice.
// tune_conv_kernels times both kernels on each conv's real input (alternating
// rounds, medians) and sets the faster one on the node (ConvKernel in
// nn/graph_module.h). The choice holds for the batch size it was tuned at;
// it is not saved with the model. Values are the same either way.
// tune_deployment also picks the thread count per batch size.
//
// Example:
//   auto folded = nnopt::fold_batch_norm(model);
//   auto table = nnopt::tune_conv_kernels(folded, 64);
//   std::cout << nnopt::conv_tuning_table(table);
//   folded->forward(images);               // runs the chosen kernels
//   nnopt::reset_conv_kernels(folded);     // back to LibTorch's own choice
#include <string>
#include <vector>

#include "nnopt/nn/graph_module.h"

namespace nnopt {

struct ConvKernelTiming {
  std::string node;
  double onednn_ms = 0;   ///< median ms of the node's conv on onednn
  double native_ms = 0;   ///< median ms on im2col + GEMM (0 when not applicable)
  ConvKernel chosen = ConvKernel::kAuto;
};

/// Times each conv2d node of `model` (eval mode, no grad, random input of the
/// model's input shape at `batch`) with both kernels in `rounds` alternating
/// rounds of `repeats` runs and sets the faster one. Grouped or dilated convs
/// (no im2col + GEMM kernel) get onednn. ValueError for batch < 1, rounds < 1
/// or repeats < 1.
std::vector<ConvKernelTiming> tune_conv_kernels(GraphModule& model, int64_t batch, int64_t rounds = 3,
                                                int64_t repeats = 10);

/// Times one conv (input `x`, weight `w`, optional `bias`, attributes `a`) on
/// both kernels in `rounds` alternating rounds of `repeats` runs; `node` is
/// left empty, `chosen` is the faster (onednn for grouped or dilated convs).
ConvKernelTiming time_conv_kernels(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& bias,
                                   const Conv2dAttrs& a, int64_t rounds, int64_t repeats);

/// Sets every conv2d node back to ConvKernel::kAuto and the model's run
/// threads back to the process's count.
void reset_conv_kernels(GraphModule& model);

/// One configuration tune_deployment timed.
struct DeployCandidate {
  int threads = 1;
  bool tuned_kernels = false;  ///< per-conv kernels (tune_conv_kernels) or LibTorch's own (kAuto)
  double ms = 0;               ///< whole-model median over the rounds
};

/// The outcome of tune_deployment at one batch size.
struct DeployTuning {
  int64_t batch = 1;
  DeployCandidate chosen;                  ///< the fastest candidate, now set on the model
  std::vector<DeployCandidate> candidates;  ///< every configuration timed
  std::vector<ConvKernelTiming> kernels;   ///< per-conv timings at the chosen thread count
  int threads() const { return chosen.threads; }
};

/// Tunes `model` for inference at `batch` as it will be deployed. For each
/// thread count 1..max_threads (0: the process's count) there are two
/// candidates: LibTorch's own kernel choice, and each conv on the kernel that
/// was faster for it alone at that count (tune_conv_kernels). The whole model
/// is timed in every candidate, in `rounds` alternating rounds of `repeats`
/// runs, and the fastest is set on the model (kernels on the nodes, count in
/// GraphModule::set_run_threads). Whole-model timing decides because the
/// per-conv choice does not add up: at batch 1 it was slower than LibTorch's
/// own choice for a pruned resnet20 (docs/results.md). Why threads: at
/// batch 1 a second thread can cost more to wake than it gains.
/// ValueError for batch < 1, rounds < 1, repeats < 3.
DeployTuning tune_deployment(GraphModule& model, int64_t batch, int max_threads = 0, int64_t rounds = 3,
                             int64_t repeats = 20);

/// "batch 1: 1 thread(s), auto kernels, 1.012 ms (1 thr: auto 1.012, tuned 1.10; 2 thr: ...)".
std::string deploy_tuning_line(const DeployTuning& t);

/// "auto", "onednn", "native".
std::string conv_kernel_name(ConvKernel k);

/// One line per conv: node, ms on each kernel, the choice; and the sums.
std::string conv_tuning_table(const std::vector<ConvKernelTiming>& t);

}  // namespace nnopt
