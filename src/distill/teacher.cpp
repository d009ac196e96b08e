// Teachers: single models, ensembles, loading from files; see teacher.h.
#include "nnopt/distill/teacher.h"

#include "nnopt/core/error.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/torchscript.h"

namespace nnopt {

namespace {
// Runs `m` in eval mode, restoring its training flag (also on exceptions).
struct EvalModeGuard {
  explicit EvalModeGuard(GraphModule& m) : m(m), was_training(m->is_training()) { m->eval(); }
  ~EvalModeGuard() { m->train(was_training); }
  GraphModule& m;
  bool was_training;
};

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

EnsembleMode ensemble_mode_from_name(const std::string& name) {
  if (name == "logits") return EnsembleMode::kLogits;
  if (name == "probs") return EnsembleMode::kProbs;
  throw ValueError(str_cat("ensemble mode must be 'logits' or 'probs', got '", name, "'"));
}

const char* ensemble_mode_name(EnsembleMode mode) {
  return mode == EnsembleMode::kLogits ? "logits" : "probs";
}

torch::Tensor ensemble_logits(const std::vector<torch::Tensor>& member_logits, EnsembleMode mode) {
  NNOPT_CHECK(!member_logits.empty(), ValueError, "ensemble: no member logits");
  for (size_t i = 1; i < member_logits.size(); ++i)
    NNOPT_CHECK(member_logits[i].sizes() == member_logits[0].sizes(), ValueError,
                "ensemble: member ", i, " gives logits ", member_logits[i].sizes(),
                " but member 0 gives ", member_logits[0].sizes());
  if (member_logits.size() == 1) return member_logits[0];
  auto z = torch::stack(member_logits);  // [M, B, K]
  if (mode == EnsembleMode::kLogits) return z.mean(0);
  // log(mean_m softmax(z_m)) = logsumexp_m(log_softmax(z_m)) - log M, stable for saturated members.
  return torch::logsumexp(torch::log_softmax(z, 2), 0) - std::log(static_cast<double>(z.size(0)));
}

Teacher::Teacher(GraphModule model) : Teacher(std::vector<GraphModule>{std::move(model)}, EnsembleMode::kLogits) {}

Teacher::Teacher(std::vector<GraphModule> members, EnsembleMode mode)
    : members_(std::move(members)), mode_(mode) {
  NNOPT_CHECK(!members_.empty(), ValueError, "teacher: no models given");
  for (size_t i = 0; i < members_.size(); ++i) {
    NNOPT_CHECK(!members_[i].is_empty(), ValueError, "teacher: model ", i, " is empty");
    const Shape& out = members_[i]->graph().output_shape();
    NNOPT_CHECK(out.size() == 1, ValueError, "teacher: model ", i, " outputs ",
                c10::IntArrayRef(out), " per sample, not class logits [K]");
    if (i == 0) continue;
    NNOPT_CHECK(out[0] == num_classes(), ValueError, "teacher ensemble: model ", i, " has ", out[0],
                " classes but model 0 has ", num_classes());
    NNOPT_CHECK(members_[i]->graph().input_shape() == input_shape(), ValueError,
                "teacher ensemble: model ", i, " takes input ",
                c10::IntArrayRef(members_[i]->graph().input_shape()), " but model 0 takes ",
                c10::IntArrayRef(input_shape()));
  }
}

int64_t Teacher::num_classes() const { return graph().output_shape().at(0); }

torch::Tensor Teacher::forward(const torch::Tensor& x, const std::vector<std::string>& taps,
                               TensorMap& out) {
  NNOPT_CHECK(taps.empty() || members_.size() == 1, ValueError, "teacher: feature taps need a ",
              "single teacher, but the ensemble has ", members_.size(), " models");
  torch::NoGradGuard ng;
  std::vector<torch::Tensor> logits;
  for (auto& m : members_) {
    EvalModeGuard eval(m);
    logits.push_back(taps.empty() ? m->forward(x) : m->forward(x, taps, out));
  }
  return ensemble_logits(logits, mode_);
}

torch::Tensor Teacher::forward(const torch::Tensor& x) {
  TensorMap unused;
  return forward(x, {}, unused);
}

GraphModule load_teacher_model(const std::string& path, const Shape& input_shape) {
  GraphModule m = ends_with(path, ".pt") ? import_torchscript_module(path, input_shape)
                                         : load_model(path);
  m->eval();
  return m;
}

TeacherPtr load_teacher(const std::vector<std::string>& paths, const Shape& input_shape,
                        EnsembleMode mode) {
  NNOPT_CHECK(!paths.empty(), ValueError, "teacher: no file given");
  std::vector<GraphModule> members;
  for (const auto& p : paths) members.push_back(load_teacher_model(p, input_shape));
  return std::make_shared<Teacher>(std::move(members), mode);
}

EvalResult evaluate_teacher(Teacher& teacher, const Dataset& data, int64_t batch_size) {
  return evaluate_logits([&](const torch::Tensor& x) { return teacher.forward(x); }, data,
                         batch_size);
}

}  // namespace nnopt
