// Step time of distillation vs its parts, measured side by side in one run:
//   student   : a Trainer epoch of the student alone (forward, CE, backward, SGD step)
//   teacher   : the teacher's eval-mode forward on the same batches, alone
//   distill   : a Trainer epoch of the student with DistillCallback (teacher
//               cache off: the teacher runs every step, as with augmentation)
// Goal (issue 5): distill <= (student + teacher) * 1.10. Rounds alternate the
// three and the medians are compared (this VM drifts from minute to minute).
// Usage: bench_distill_step [TEACHER.nnopt|resnet20] [STUDENT=lenet5] [WIDTH=0.5]
//                           [BATCHES=60] [ROUNDS=5] [THREADS=0] [LOSS=kd]
//   LOSS: kd, or kd+hint (adds a FitNets hint between the last feature maps)
#include <algorithm>
#include <iostream>

#include "nnopt/core/runtime.h"
#include "nnopt/data/dataset.h"
#include "nnopt/distill/compare.h"
#include "nnopt/distill/distill_callback.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/train/trainer.h"

using namespace nnopt;

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string teacher_arg = argc > 1 ? argv[1] : "resnet20";
    const std::string student_name = argc > 2 ? argv[2] : "lenet5";
    const double width = argc > 3 ? std::stod(argv[3]) : 0.5;
    const int64_t batches = argc > 4 ? std::stoll(argv[4]) : 60;
    const int rounds = argc > 5 ? std::stoi(argv[5]) : 5;
    const int threads = set_threads(argc > 6 ? std::stoi(argv[6]) : 0);
    const std::string loss = argc > 7 ? argv[7] : "kd";
    const int64_t bs = 128;
    Dataset data = make_synthetic(bs * batches, {1, 28, 28}, 10, 3);

    seed_everything(0);
    GraphModule teacher = teacher_arg.find(".nnopt") != std::string::npos
                              ? load_model(teacher_arg)
                              : GraphModule(build_model(teacher_arg, ModelOptions{}));
    teacher->eval();
    ModelOptions so;
    so.width = width;
    auto fresh_student = [&] { return GraphModule(build_model(student_name, so)); };
    TrainOptions t = TrainOptions(1).batch_size(bs).lr(0.02).nesterov(true).progress("off");

    std::vector<double> ts, tt, td;
    for (int r = 0; r < rounds + 1; ++r) {  // round 0 warms up
      GraphModule s1 = fresh_student();
      Trainer plain(s1, t);
      const double a = plain.fit(data).history.back().seconds / batches;

      const double t0 = now_seconds();
      {
        torch::NoGradGuard ng;
        for (int64_t b = 0; b < batches; ++b) teacher->forward(data.images.narrow(0, b * bs, bs));
      }
      const double b = (now_seconds() - t0) / batches;

      GraphModule s2 = fresh_student();
      std::vector<LossSpec> specs{parse_loss_spec("kd:T=4,alpha=0.9")};
      if (loss == "kd+hint")
        specs.push_back(LossSpec{"hint", {}, {default_feature_pair(teacher->graph(), s2->graph())}});
      std::vector<DistillLossPtr> losses;
      for (const auto& s : specs) losses.push_back(make_distill_loss(s));
      Trainer kd(s2, t);
      kd.add_callback(std::make_shared<DistillCallback>(s2, std::make_shared<Teacher>(teacher),
                                                        losses, DistillOptions().cache_teacher(false)));
      const double c = kd.fit(data).history.back().seconds / batches;
      if (r == 0) continue;
      ts.push_back(a);
      tt.push_back(b);
      td.push_back(c);
    }
    const double ms = 1e3 * median(ts), mt = 1e3 * median(tt), md = 1e3 * median(td);
    std::printf("teacher %s, student %s x%.2f, batch %lld, %lld batches, %d rounds, %d threads, loss %s\n",
                teacher_arg.c_str(), student_name.c_str(), width, static_cast<long long>(bs),
                static_cast<long long>(batches), rounds, threads, loss.c_str());
    std::printf("student step %.2f ms | teacher forward %.2f ms | sum %.2f ms | distill step %.2f ms | "
                "distill / sum = %.3f (goal <= 1.10)\n",
                ms, mt, ms + mt, md, md / (ms + mt));
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_distill_step: " << e.what() << "\n";
    return 2;
  }
}
