// Born-again networks (Furlanello et al. 2018); see born_again.h.
#include "nnopt/distill/born_again.h"

#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/data/dataset.h"

namespace nnopt {

void BornAgainOptions::validate() const {
  NNOPT_CHECK(generations() >= 1, ValueError, "born-again: generations must be >= 1, got ",
              generations());
  train().validate();
  distill().validate();
  NNOPT_CHECK(!losses().empty(), ValueError, "born-again: no distillation loss given");
  for (const auto& s : losses()) make_distill_loss(s);  // bad specs fail before any training
}

BornAgainResult born_again(const Graph& arch, const Dataset& train, const Dataset& test,
                           const BornAgainOptions& opt) {
  opt.validate();
  BornAgainResult result;
  GraphModule prev = nullptr;
  for (int64_t k = 1; k <= opt.generations(); ++k) {
    TrainOptions to = opt.train();
    to.seed(mix_seed(opt.train().seed(), static_cast<uint64_t>(k)));
    to.out_dir(opt.out_dir().empty() ? "" : path_join(opt.out_dir(), str_cat("gen", k)));
    seed_everything(to.seed());
    GraphModule model(arch);  // a fresh initialization every generation
    Trainer trainer(model, to);
    if (!prev.is_empty()) {
      std::vector<DistillLossPtr> losses;
      for (const auto& s : opt.losses()) losses.push_back(make_distill_loss(s));
      trainer.add_callback(std::make_shared<DistillCallback>(
          model, std::make_shared<Teacher>(prev), std::move(losses), opt.distill()));
    }
    result.runs.push_back(trainer.fit(train, &test));
    result.test_accuracy.push_back(evaluate(model, test, to.eval_batch_size()).accuracy);
    if (!to.out_dir().empty()) result.checkpoints.push_back(path_join(to.out_dir(), "model.nnopt"));
    prev = model;
  }
  result.last = prev;
  return result;
}

}  // namespace nnopt
