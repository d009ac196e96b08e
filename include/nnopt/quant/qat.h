#pragma once
// Quantization-aware training (QAT): the calibrated FakeQuants of a PTQ model
// are replaced by a method's learnable quantizers, initialized from their
// calibrated scale / zero point, and the model is trained with the one
// Trainer (callbacks, resumable checkpoints), optionally distilling from the
// fp32 model.
//
//   method   weights                                activations
//   lsq      LSQ: learned step size                 LSQ
//            (Esser et al., ICLR 2020)
//   lsq+     LSQ, step initialized from mean/std    LSQ+: learned step and offset
//            (Bhalgat et al., CVPRW 2020)           (Bhalgat et al. 2020)
//   pact     DoReFa (as the PACT paper does)         PACT: learned clip alpha with an
//                                                   L2 penalty (Choi et al. 2018)
//   dorefa   DoReFa: tanh normalization             fixed clip from calibration
//            (Zhou et al. 2016)                     (the calibrated FakeQuant, STE)
//   apot     APoT: additive powers-of-two levels,   APoT levels, learned clip
//            weight normalization, learned clip     (Li et al., ICLR 2020)
//
// Every quantizer keeps the bit width and signedness of the FakeQuant it
// replaces (QuantConfig decides them: first/last layer bits, per-layer bits),
// 2-8 bits. The grids of lsq, lsq+, pact and dorefa are uniform: after
// training, convert_qat_to_fake_quant() turns them back into plain FakeQuants
// (scale / zero point) so that export_scale_table() and lower_to_int8() work.
// APoT levels are not uniform; an APoT model stays a fake-quant (float) model.
//
// Example:
//   auto folded = nnopt::fold_batch_norm(fp32);
//   nnopt::attach_quantizers(folded, nnopt::QuantConfig()
//       .weight(nnopt::QuantScheme(4).per_channel(true))
//       .activation(nnopt::QuantScheme(4).is_signed(false).symmetric(false))
//       .first_last_bits(8));
//   nnopt::calibrate(folded, train, 8);
//   auto r = nnopt::run_qat(folded, train, &test, nnopt::QatOptions().method("lsq")
//       .train(nnopt::TrainOptions(5).lr(0.01).out_dir("out")), fp32 /*teacher*/);
//   nnopt::convert_qat_to_fake_quant(folded);       // LSQ -> FakeQuant
//   auto int8 = nnopt::lower_to_int8(folded);       // 8-bit models only
#include <torch/arg.h>
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "nnopt/data/dataset.h"
#include "nnopt/nn/graph_module.h"
#include "nnopt/quant/fake_quant.h"
#include "nnopt/quant/scheme.h"
#include "nnopt/train/trainer.h"

namespace nnopt {

struct QatOptions {
  /// "dorefa" | "pact" | "lsq" | "lsq+" | "apot" (see qat_method_names()). Default "lsq".
  TORCH_ARG(std::string, method) = "lsq";
  /// Training recipe (epochs, lr, schedule, seed, out_dir, resume, progress, ...).
  /// Default: 5 epochs, SGD lr 0.01, cosine, weight decay 5e-4 (fine-tuning
  /// from a calibrated model needs a smaller lr than training from scratch).
  TORCH_ARG(TrainOptions, train) = TrainOptions(5).lr(0.01);
  /// PACT / APoT: L2 penalty on the learned clip values, clip_decay/2 * sum alpha^2
  /// added to the loss (PACT's lambda_alpha). Default 5e-4. Applies on top of
  /// the optimizer's weight decay, which covers every parameter.
  TORCH_ARG(double, clip_decay) = 5e-4;
  /// DoReFa / PACT weights: the paper's grid of 2^b levels without zero
  /// (2*quantize_b(tanh(w)/(2 max|tanh w|) + 1/2) - 1) instead of the default
  /// symmetric grid that contains zero (2^b - 1 levels; what integer kernels
  /// with zero point 0 need). The paper's grid converts to FakeQuant with one
  /// more bit (so not at 8 bits). Default false.
  TORCH_ARG(bool, dorefa_paper_grid) = false;
  /// Knowledge distillation from a teacher: path of an fp32 checkpoint (.nnopt, or
  /// .pt TorchScript) given to run_qat by file; "" = none unless run_qat gets a
  /// live teacher model. Default "".
  TORCH_ARG(std::string, teacher) = "";
  /// Distillation losses when there is a teacher (distill/distill_loss.h specs).
  /// Default {"kd:T=4,alpha=0.5"}.
  TORCH_ARG(std::vector<std::string>, distill) = {"kd:T=4,alpha=0.5"};
  /// Freeze the batch-norm statistics from this epoch on (1-based; 0 = never):
  /// the batch norms then normalize with their running statistics and stop
  /// updating them, while their affine parameters and everything else keep
  /// training (Jacob et al. 2018, sec. 3.2; PyTorch's freeze_bn_stats). With
  /// batch-norm fold simulation the training graph then equals the folded
  /// model. Default 0.
  TORCH_ARG(int64_t, freeze_bn_epoch) = 0;

 public:  // TORCH_ARG leaves the section private
  /// ValueError naming the bad option: unknown method (lists the known ones),
  /// clip_decay < 0 or not finite, empty distill list, bad train options.
  void validate() const;
};

/// The QAT methods, in registration order: dorefa, pact, lsq, lsq+, apot.
std::vector<std::string> qat_method_names();

/// What a learnable quantizer is initialized from: the calibrated FakeQuant
/// it replaces and, for weight quantizers, the weight it will see.
struct QuantizerInit {
  QuantScheme scheme;    ///< the FakeQuant's scheme (bits, signedness, per-channel)
  QParams qparams;       ///< its calibrated scale / zero point
  bool weight = false;   ///< weight (true) or activation quantizer
  torch::Tensor value;   ///< weights: the node's current weight; activations: undefined
  const QatOptions* options = nullptr;
};

/// Base class of the learnable quantizers (a GraphModule transform whose
/// parameters train with the model).
class QatQuantizerImpl : public TransformImpl {
 public:
  explicit QatQuantizerImpl(const QuantScheme& scheme) : scheme_(scheme) { scheme_.validate(); }
  /// Registry name of the quantizer kind ("lsq", "lsq+", "pact", "dorefa", "apot").
  virtual std::string kind() const = 0;
  /// True if the output lies on a uniform grid with an integer zero point
  /// (then to_fake_quant works).
  virtual bool uniform() const = 0;
  /// The grid values (float32) this quantizer can output, for per-tensor
  /// quantizers (tests and docs); per-channel ones give channel `channel`'s.
  virtual torch::Tensor levels(int64_t channel = 0) const = 0;
  /// For uniform quantizers: the FakeQuant and the input it must see so that
  /// fq(fq_input(x)) equals forward(x) (weights: fq_input(weight) is the
  /// weight to store). ValueError for non-uniform ones.
  virtual FakeQuantPtr to_fake_quant() const;
  /// The tensor the equivalent FakeQuant quantizes (identity for LSQ).
  virtual torch::Tensor fq_input(const torch::Tensor& x) const { return x; }
  /// Sum of the L2-penalized clip parameters' squares (PACT, APoT); undefined if none.
  virtual torch::Tensor clip_penalty() const { return {}; }
  const QuantScheme& scheme() const { return scheme_; }

 protected:
  QuantScheme scheme_;
};
using QatQuantizerPtr = std::shared_ptr<QatQuantizerImpl>;

/// Builds a method's weight and activation quantizers. A null activation
/// factory result means "keep the calibrated FakeQuant" (dorefa).
struct QatMethod {
  std::function<QatQuantizerPtr(const QuantizerInit&)> weight;
  std::function<QatQuantizerPtr(const QuantizerInit&)> activation;
};
/// ValueError "unknown QAT method 'x' (known: dorefa, pact, lsq, lsq+, apot)".
const QatMethod& qat_method(const std::string& name);
/// Adds a method (not thread-safe; call at start-up). ValueError if the name is
/// empty or already registered.
void register_qat_method(const std::string& name, QatMethod method);

/// A learnable quantizer attached to a model.
struct AttachedQatQuantizer {
  std::string node;
  bool weight = false;
  QatQuantizerPtr q;
};
/// The QatQuantizer transforms of `model`, in graph order (weight before activation).
std::vector<AttachedQatQuantizer> find_qat_quantizers(GraphModule& model);

/// Replaces every calibrated FakeQuant of `model` by `opt.method`'s learnable
/// quantizer, initialized from its qparams. Quantizers that follow another
/// (average pools) stay FakeQuants and copy their leader's qparams on
/// conversion. ValueError if the model has no FakeQuants, one of them was never
/// calibrated (still observing), or for a bad option.
void attach_qat_quantizers(GraphModule& model, const QatOptions& opt);

/// Turns every uniform learnable quantizer back into a plain FakeQuant with the
/// equivalent scale / zero point (weights: the weight stored becomes the
/// quantizer's pre-grid input, e.g. DoReFa's scaled tanh normalization), so the
/// model computes the same function and lowers with lower_to_int8 at 8 bits.
/// LSQ+ offsets are rounded to the nearest integer zero point (a shift of at
/// most half a step). ValueError naming the node for APoT (non-uniform levels)
/// or DoReFa's paper grid at 8 bits.
void convert_qat_to_fake_quant(GraphModule& model);

/// Saves a model that keeps learnable quantizers with non-uniform levels
/// (APoT; uniform ones are converted with convert_qat_to_fake_quant and saved
/// with save_quantized_model). The metadata lists every transform under
/// "qat_transforms" ({node, weight, kind: fake_quant | apot, scheme,
/// channels, follows / quantizing or signed_grid}); load_model rebuilds them
/// (restore_qat_transforms) and loads their state. ValueError for a
/// transform of another kind, or metadata that is not a JSON object.
void save_qat_model(const std::string& path, GraphModule& model, const std::string& meta_json);
/// True if save_qat_model wrote this metadata.
bool has_qat_transforms(const std::string& meta_json);
/// Attaches the transforms that save_qat_model listed in `meta_json` to a
/// plain model (state not loaded). ValueError naming the record for a bad
/// one (unknown node or kind, bad scheme); the model is unchanged then.
void restore_qat_transforms(GraphModule& model, const std::string& meta_json);

/// The Trainer callback of QAT: adds clip_decay/2 * sum of clip penalties to
/// the loss (logged as "clip_l2") and reports the mean step / clip per epoch.
CallbackPtr make_qat_callback(GraphModule model, const QatOptions& opt);

/// model: a calibrated fake-quant model (attach_quantizers + calibrate on a
/// BN-folded model, bits from QuantConfig). Replaces its FakeQuants by the
/// method's learnable quantizers, initialised from their calibrated qparams
/// (attach_qat_quantizers; skipped if the model already carries the method's
/// quantizers, e.g. to continue), and trains with Trainer (QAT callback,
/// distillation callback if a teacher is given; resumable with
/// opt.train().resume()). `teacher`: a live fp32 model to distill from (wins
/// over opt.teacher()). The model keeps the learnable quantizers afterwards;
/// call convert_qat_to_fake_quant to lower it.
TrainResult run_qat(GraphModule& model, const Dataset& train, const Dataset* val,
                    const QatOptions& opt, GraphModule teacher = nullptr);

}  // namespace nnopt
