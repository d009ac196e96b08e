#pragma once
// Real integer inference: a model with folded batch norm and calibrated 8-bit
// quantizers, lowered to LibTorch's quantized kernels on the onednn engine.
//
// Every fake-quant point of the model (see quant/attach.h) becomes a point
// where the integer model holds a quint8 tensor with the same scale and zero
// point, so the fake-quant GraphModule is the plain reference of this path.
//
//   node op                      kernel (onednn engine)
//   input (its quantizer)        at::quantize_per_tensor -> quint8
//   conv2d [-> relu]             quantized::conv2d.new / quantized::conv2d_relu.new
//   linear [-> relu]             quantized::linear / quantized::linear_relu
//   add [-> relu]                quantized::add / quantized::add_relu
//   relu6 (fused or not)         the producer's kernel, then hardtanh(0, 6) on quint8
//   relu (not fused)             relu on quint8 (keeps the qparams)
//   hardswish                    quantized::hardswish
//   concat                       quantized::cat
//   max_pool / avg_pool /        max_pool2d / avg_pool2d / adaptive_avg_pool2d on
//   global_avg_pool              quint8 (they keep the input's qparams)
//   flatten                      flatten (a view)
//   dropout, identity            nothing
//   output                       at::dequantize -> float32
// A node whose quantizer's qparams differ from what its kernel produced (an
// average pool with its own quantizer) is re-quantized.
//
// Schemes the engine runs: activations 8-bit unsigned (quint8; affine or
// symmetric, no narrow range); weights signed symmetric (zero point 0, as
// onednn requires), per tensor or per output channel (ch_axis 0), 2-8 bits
// (lower bit widths are stored exactly as int8 codes). Anything else is a
// ValueError naming the node and the scheme.
//
// Exactness. The kernels accumulate u8 activation codes times s8 weight codes
// in int32, except on CPUs without VNNI (AVX2 or AVX-512 without the VNNI
// extension): there onednn multiplies with vpmaddubsw, which adds the
// products of two adjacent input channels (or linear inputs 2k, 2k+1) into a
// saturating int16 first. With 8-bit weights and 8-bit activations such a pair
// can reach 255 * (127 + 127) = 64770 > 32767, and the result then differs from
// the fake-quant model by many output steps (measured: 9 steps on a lenet5, top-1
// unchanged). PyTorch's x86/fbgemm default avoids it with 7-bit activations
// (reduce_range). Here every conv/linear step records the largest pair sum its
// weight codes allow (Int8StepInfo::pair_bound); saturating_layers() names
// the layers that may saturate on this CPU. Weights of at most 7 bits
// (|code| <= 64, pair sum <= 255 * 128 = 32640) never saturate, so W7A8 runs
// exactly on every CPU.
//
// Example:
//   auto folded = nnopt::fold_batch_norm(model);
//   nnopt::attach_quantizers(folded, nnopt::QuantConfig());   // W8A8
//   nnopt::calibrate(folded, calib_set, 8);
//   nnopt::Int8Model q = nnopt::lower_to_int8(folded);
//   auto logits = q.forward(images);                          // float32 [N, classes]
//   q.save("out/model.int8.nnopt");
//   auto again = nnopt::Int8Model::load("out/model.int8.nnopt");
//   q.export_torchscript("out/model.int8.pt");   // PyTorch: engine "onednn", torch.jit.load
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "nnopt/ir/graph.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/graph_module.h"

namespace nnopt {

/// One lowered node, for summaries and tests.
struct Int8StepInfo {
  std::string node;     ///< graph node name
  std::string kernel;   ///< "conv2d_relu", "linear", "add", "max_pool2d", "alias", ...
  bool has_qparams = false;  ///< whether the kernel writes (or re-quantizes to) scale/zero_point
  double scale = 1;     ///< output scale
  int64_t zero_point = 0;
  /// conv2d / linear: the largest |u8 code * s8 code| sum of two adjacent input
  /// channels (2k, 2k+1) the weights allow, with activation codes up to 255;
  /// 0 for other kernels. Above 32767 the no-VNNI path may saturate.
  int64_t pair_bound = 0;
  /// pair_bound > 32767 and this CPU has no VNNI (see "Exactness" above).
  bool may_saturate = false;
};

/// A model running on integer kernels. Copies share the prepacked weights.
/// Inference only; not thread-safe to call forward from several threads while
/// the global quantized engine changes.
/// Each input shape and intra-op thread count runs on its own prepacked
/// weights, made at its first call (LibTorch 1.13's onednn convolution keeps
/// the primitive of a packed weight's first call and rebuilds it on every call
/// with another shape or thread count); the 8 most recently used are kept.
class Int8Model {
 public:
  Int8Model();

  /// float32 [N, *input_shape] -> float32 [N, *output_shape] (dequantized output).
  torch::Tensor forward(const torch::Tensor& x) const;
  /// Same, and stores the dequantized outputs of the nodes named in `taps`
  /// into `out` (per-layer differential tests). GraphError for an unknown name.
  torch::Tensor forward(const torch::Tensor& x, const std::vector<std::string>& taps,
                        TensorMap& out) const;
  /// Same as forward(x), but returns the quantized (quint8) output tensor.
  torch::Tensor forward_quantized(const torch::Tensor& x) const;

  const Graph& graph() const;
  /// One entry per graph node, in order.
  std::vector<Int8StepInfo> steps() const;
  /// Readable table: node, kernel, output scale and zero point; the layers
  /// that may saturate on this CPU are marked.
  std::string summary() const;
  /// Names of the conv2d/linear steps whose int16 pair sums may saturate on
  /// this CPU (empty on VNNI CPUs, and for weights of at most 7 bits).
  std::vector<std::string> saturating_layers() const;
  /// Bytes of the int8 weights + float biases + per-channel qparams.
  int64_t weight_bytes() const;
  /// How many sets of prepacked weights are kept (one per input shape and
  /// thread count seen, at most 8).
  size_t packed_variants() const;

  /// Writes an nnopt checkpoint (graph, int8 weights with their per-channel
  /// scales / zero points, float biases, and the qparams in the metadata under
  /// "int8"); `meta_json` (an object) is merged into the metadata. Atomic.
  void save(const std::string& path, const std::string& meta_json = "{}") const;
  /// Loads a file written by save() and prepacks it again (no calibration).
  /// FileError naming the path for files that are not int8 models or are
  /// inconsistent.
  static Int8Model load(const std::string& path);
  /// load() on a checkpoint already read from `path` (named in errors).
  static Int8Model from_checkpoint(const Checkpoint& ck, const std::string& path);
  /// True if the checkpoint was written by save() (its metadata names the
  /// int8 format).
  static bool is_int8(const Checkpoint& ck);

  /// Writes a TorchScript file that PyTorch loads (set the quantized engine to
  /// onednn first: torch.backends.quantized.engine = "onednn") and that calls
  /// the same kernels: the packed weights are module attributes
  /// (Conv2dPackedParamsBase / LinearPackedParamsBase), forward takes float32
  /// [N, *input_shape] and returns the dequantized output. Atomic write;
  /// FileError naming the path.
  void export_torchscript(const std::string& path) const;

  struct Impl;

 private:
  explicit Int8Model(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
  friend Int8Model lower_to_int8(GraphModule& model);
};

/// Lowers a GraphModule with folded batch norm and calibrated FakeQuants (see
/// the top of this file) to integer kernels. Sets the quantized engine to
/// onednn. The model is not changed.
/// GraphError naming the node for batch norm that was not folded ("run
/// fold_batch_norm first") and for ops without an integer kernel; ValueError
/// naming the node for missing or uncalibrated quantizers and for schemes the
/// engine cannot run.
Int8Model lower_to_int8(GraphModule& model);

/// Whether this CPU has VNNI (AVX512-VNNI or AVX-VNNI), with which onednn
/// accumulates u8 x s8 products exactly in int32.
bool cpu_has_vnni();

/// Makes onednn the global quantized engine (at::globalContext().setQEngine).
/// ValueError if this LibTorch has no onednn engine.
void use_onednn_engine();

}  // namespace nnopt
