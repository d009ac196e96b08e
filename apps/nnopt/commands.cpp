// The subcommands: each parses its options, calls the library, prints.
#include <cmath>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"
#include "nnopt/core/runtime.h"
#include "nnopt/core/strings.h"
#include "nnopt/data/dataset.h"
#include "nnopt/deploy/conv_tuning.h"
#include "nnopt/deploy/int8.h"
#include "nnopt/deploy/profile.h"
#include "nnopt/models/zoo.h"
#include "nnopt/nn/checkpoint.h"
#include "nnopt/nn/fold_bn.h"
#include "nnopt/nn/torchscript.h"
#include "nnopt/pipeline/demo.h"
#include "nnopt/train/trainer.h"

namespace nnopt::cli {
using json = nlohmann::json;

// ------------------------------------------------------------------ shared

void add_common(CLI::App* app, Common& c, bool with_out) {
  app->add_option("--threads", c.threads, "intra-op threads (0 = all cores)")
      ->check(CLI::Range(0, 1024));
  app->add_option("--seed", c.seed, "random seed");
  if (with_out) app->add_option("--out", c.out, "output folder");
  app->add_flag("--json", c.json, "print a machine-readable result on stdout");
  app->add_option("--progress", c.progress, "progress display: auto, bar, lines, off")
      ->check(CLI::IsMember({"auto", "bar", "lines", "off"}));
  // Handled before parsing (see expand_config); declared here for --help.
  app->add_option("--config", c.config, "JSON or YAML file of option values (flags override)");
}

void add_data(CLI::App* app, DataArgs& d) {
  app->add_option("--dataset", d.dataset, "fashion-mnist, mnist or synthetic");
  app->add_option("--data-dir", d.data_dir, "folder with the IDX files (default: Debian's fashion-mnist)");
  app->add_option("--limit", d.limit, "use only the first N samples of each split (0 = all)")
      ->check(CLI::NonNegativeNumber);
}

void add_model_options(CLI::App* app, ModelSource& m) {
  app->add_option("--model", m.model, "zoo model: " + [] {
    std::string s;
    for (const auto& n : model_names()) s += (s.empty() ? "" : ", ") + n;
    return s;
  }());
  app->add_option("--width", m.width, "width multiplier (resnet, mobilenetv2, vgg-small)");
  app->add_option("--depth", m.depth, "resnet depth (6n+2)");
  app->add_option("--classes", m.num_classes, "number of classes");
}

void add_train_options(CLI::App* app, TrainOptions& t, std::string& milestones,
                       int64_t& val_size) {
  app->add_option("--epochs", t.epochs(), "epochs")->check(CLI::PositiveNumber);
  app->add_option("--batch-size", t.batch_size(), "mini-batch size")->check(CLI::PositiveNumber);
  app->add_option("--optimizer", t.optimizer(), "sgd, adam or adamw")
      ->check(CLI::IsMember({"sgd", "adam", "adamw"}));
  app->add_option("--lr", t.lr(), "peak learning rate")->check(CLI::PositiveNumber);
  app->add_option("--momentum", t.momentum(), "SGD momentum")->check(CLI::Range(0.0, 0.999999));
  app->add_flag("--nesterov", t.nesterov(), "Nesterov momentum");
  app->add_option("--weight-decay", t.weight_decay(), "weight decay")->check(CLI::NonNegativeNumber);
  app->add_option("--schedule", t.schedule(), "constant, step, multistep or cosine")
      ->check(CLI::IsMember({"constant", "step", "multistep", "cosine"}));
  app->add_option("--warmup-epochs", t.warmup_epochs(), "linear warm-up epochs")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--step-size", t.step_size(), "epochs between decays (step)")
      ->check(CLI::PositiveNumber);
  app->add_option("--milestones", milestones, "decay epochs, e.g. 30,60 (multistep)");
  app->add_option("--gamma", t.gamma(), "decay factor")->check(CLI::Range(1e-9, 1.0));
  app->add_option("--label-smoothing", t.label_smoothing(), "label smoothing in [0, 1)")
      ->check(CLI::Range(0.0, 0.999999));
  app->add_option("--crop-padding", t.crop_padding(), "random crop after padding (0 = off)")
      ->check(CLI::NonNegativeNumber);
  app->add_flag("--hflip", t.hflip(), "random horizontal flips");
  app->add_option("--val-size", val_size,
                  "hold out N training samples for validation (0: validate on the test split)")
      ->check(CLI::NonNegativeNumber);
  app->add_option("--memory-format", t.memory_format(),
                  "activation memory order while training: channels_last or contiguous")
      ->check(CLI::IsMember({"channels_last", "contiguous"}));
  app->add_option("--max-batches", t.max_batches(), "batches per epoch at most (0 = all)")
      ->check(CLI::NonNegativeNumber);
  app->add_flag("--resume", t.resume(), "continue from OUT/checkpoint.nnopt");
}

std::vector<int64_t> parse_shape(const std::string& s, const std::string& what) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t p = s.find(',', start);
    std::string part = s.substr(start, p == std::string::npos ? std::string::npos : p - start);
    char* end = nullptr;
    long long v = std::strtoll(part.c_str(), &end, 10);
    NNOPT_CHECK(!part.empty() && end == part.c_str() + part.size() && v > 0 && v < (1 << 20),
                ValueError, what, ": '", s, "' is not a list of positive integers like 1,28,28");
    out.push_back(v);
    if (p == std::string::npos) break;
    start = p + 1;
  }
  return out;
}

void apply_common(const Common& c) {
  set_threads(c.threads);
  tune_allocator();
  seed_everything(c.seed);
}

void emit(const Common& c, const std::string& human, const std::string& json_text) {
  if (c.json) {
    std::cout << json_text << std::endl;
  } else {
    std::cout << human << std::flush;
  }
}

GraphModule load_source(const ModelSource& m, std::string* meta) {
  NNOPT_CHECK(m.checkpoint.empty() != m.model.empty(), ValueError,
              "give either a CHECKPOINT or --model NAME (not both, not neither)");
  if (!m.checkpoint.empty()) return load_model(m.checkpoint, meta);
  ModelOptions mo;
  if (!m.input_shape.empty()) mo.input_shape = parse_shape(m.input_shape, "--input-shape");
  mo.num_classes = m.num_classes;
  mo.width = m.width;
  mo.depth = m.depth;
  if (meta) *meta = "{}";
  return GraphModule(build_model(m.model, mo));
}

DatasetOptions dataset_options(const DataArgs& d) {
  DatasetOptions o;
  o.name = d.dataset;
  o.dir = d.data_dir;
  o.limit = d.limit;
  return o;
}

namespace {

std::string pct(double v) { return fmt(100 * v, 2) + " %"; }

}  // namespace

// ------------------------------------------------------------------ train

void register_train(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static ModelSource m;
  static TrainOptions t;
  static int64_t val_size = 0;
  static std::string milestones;
  auto* sub = app.add_subcommand("train", "train a zoo model");
  add_common(sub, c);
  add_data(sub, d);
  add_model_options(sub, m);
  add_train_options(sub, t, milestones, val_size);
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      NNOPT_CHECK(!m.model.empty(), ValueError, "train: --model NAME is required");
      if (c.out.empty()) c.out = "runs/" + m.model;
      if (!milestones.empty()) t.milestones(parse_shape(milestones, "--milestones"));
      t.seed(c.seed).out_dir(c.out).progress(c.progress);
      t.validate();
      Dataset train = load_dataset(dataset_options(d), true);
      Dataset test = load_dataset(dataset_options(d), false);
      Dataset val = test;
      if (val_size > 0) std::tie(train, val) = split_validation(train, val_size, c.seed);
      ModelOptions mo;
      mo.input_shape = train.shape();
      mo.num_classes = train.num_classes;
      mo.width = m.width;
      mo.depth = m.depth;
      seed_everything(c.seed);
      GraphModule model(build_model(m.model, mo));
      std::cerr << "nnopt train: " << m.model << " (" << model->graph().num_params()
                << " params, " << model->graph().macs() << " MACs) on " << train.name << " ("
                << train.size() << " train, " << val.size()
                << (val_size > 0 ? " validation" : " test") << "), " << threads()
                << " threads, out " << c.out << "\n";
      Trainer trainer(model, t);
      TrainResult r = trainer.fit(train, &val);
      EvalResult ev = evaluate(model, test, t.eval_batch_size());
      double secs = 0;
      for (const auto& e : r.history) secs += e.seconds;
      json j = {{"model", m.model},
                {"checkpoint", path_join(c.out, "model.nnopt")},
                {"metrics", path_join(c.out, "metrics.jsonl")},
                {"epochs", t.epochs()},
                {"test_accuracy", ev.accuracy},
                {"test_loss", ev.loss},
                {"best_val_accuracy", r.best_val_acc},
                {"train_seconds", secs},
                {"resumed_from_epoch", r.resumed_from}};
      emit(c,
           str_cat("test accuracy ", pct(ev.accuracy), " (loss ", fmt(ev.loss, 4), ") after ",
                   t.epochs(), " epochs, ", format_duration(secs), " of training\nmodel: ",
                   path_join(c.out, "model.nnopt"), "\n"),
           j.dump());
      return 0;
    };
  });
}

// ------------------------------------------------------------------ eval

void register_eval(CLI::App& app, Runner& run) {
  static Common c;
  static DataArgs d;
  static ModelSource m;
  static int64_t batch = 1000;
  static std::string split = "test";
  auto* sub = app.add_subcommand("eval", "evaluate a checkpoint, an int8 model or a zoo model on a data split");
  add_common(sub, c, false);
  add_data(sub, d);
  sub->add_option("checkpoint", m.checkpoint, "nnopt checkpoint file (float, fake-quant or int8)");
  add_model_options(sub, m);
  sub->add_option("--batch-size", batch, "evaluation batch size")->check(CLI::PositiveNumber);
  sub->add_option("--split", split, "test or train")->check(CLI::IsMember({"test", "train"}));
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      Dataset data = load_dataset(dataset_options(d), split == "train");
      auto check_shape = [&](const std::vector<int64_t>& shape) {
        NNOPT_CHECK(shape == data.shape(), ValueError, "eval: the model takes ", c10::IntArrayRef(shape),
                    " but ", data.name, " samples are ", c10::IntArrayRef(data.shape()));
      };
      EvalResult ev;
      std::string kind = "float";
      Checkpoint ck;  // read once: it is an int8 or a float model
      const bool from_file = m.model.empty() && !m.checkpoint.empty();
      if (from_file) ck = load_checkpoint(m.checkpoint);
      if (from_file && Int8Model::is_int8(ck)) {
        // An int8 model (nnopt quantize, compare quant): onednn's integer kernels.
        Int8Model q = Int8Model::from_checkpoint(ck, m.checkpoint);
        check_shape(q.graph().input_shape());
        ev = evaluate_logits([&](const torch::Tensor& x) { return q.forward(x); }, data, batch);
        kind = "int8";
      } else {
        if (!m.model.empty()) {
          std::ostringstream s;
          for (size_t i = 0; i < data.shape().size(); ++i) s << (i ? "," : "") << data.shape()[i];
          m.input_shape = s.str();
        }
        GraphModule model = from_file ? model_from_checkpoint(std::move(ck), m.checkpoint) : load_source(m);
        check_shape(model->graph().input_shape());
        ev = evaluate(model, data, batch);
      }
      json j = {{"accuracy", ev.accuracy}, {"loss", ev.loss}, {"count", ev.count},
                {"dataset", data.name}, {"split", split}, {"model_kind", kind}};
      emit(c, str_cat("accuracy ", pct(ev.accuracy), "  loss ", fmt(ev.loss, 4), "  (", ev.count, " ",
                      data.name, " ", split, " samples", kind == "int8" ? ", int8 model" : "", ")\n"),
           j.dump());
      return 0;
    };
  });
}

// ------------------------------------------------------------------ profile

void register_profile(CLI::App& app, Runner& run) {
  static Common c;
  static ModelSource m;
  static int64_t batch = 64;
  static LatencyOptions lat;
  static bool layers = false, fold = false, tune = false;
  m.input_shape = "1,28,28";
  auto* sub = app.add_subcommand("profile", "parameters, MACs, size and latency of a model");
  add_common(sub, c, false);
  sub->add_option("checkpoint", m.checkpoint, "nnopt checkpoint file");
  add_model_options(sub, m);
  sub->add_option("--input-shape", m.input_shape, "per-sample input shape for --model (C,H,W)");
  sub->add_option("--batch", batch, "the larger batch to time (besides batch 1)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--repeats", lat.repeats, "timed runs (median reported)")->check(CLI::PositiveNumber);
  sub->add_option("--warmup", lat.warmup, "untimed runs first")->check(CLI::NonNegativeNumber);
  sub->add_flag("--layers", layers, "also print the per-layer table (and with --tune the kernel timings)");
  sub->add_flag("--fold-bn", fold, "time the model with batch norm folded into the convs (as deployed)");
  sub->add_flag("--tune,--tune-convs", tune,
                "tune as deployed at each batch size: each conv's kernel (onednn, im2col + GEMM) and the thread "
                "count (1..--threads), by timing them");
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      GraphModule model = load_source(m);
      if (fold) {
        model->eval();
        model = fold_batch_norm(model);
      }
      const std::vector<int64_t> batches = batch == 1 ? std::vector<int64_t>{1} : std::vector<int64_t>{1, batch};
      std::string tuning;
      ModelProfile p = profile_model(model, tune ? std::vector<int64_t>{} : batches, lat);
      if (tune)
        for (auto b : batches) {
          auto t = tune_deployment(model, b);
          tuning += str_cat(deploy_tuning_line(t), "\nconv kernels at batch ", b, ", ", t.threads(), " thread(s):\n",
                            conv_tuning_table(t.kernels));
          p.latency.push_back(measure_latency(model, b, lat));
          reset_conv_kernels(model);
        }
      emit(c, (layers ? model->graph().summary() + "\n" + tuning : std::string()) + p.to_table(), p.to_json());
      return 0;
    };
  });
}

// ------------------------------------------------------------------ export / import

void register_export(CLI::App& app, Runner& run) {
  static Common c;
  static std::string checkpoint, format = "torchscript";
  auto* sub = app.add_subcommand("export", "write a checkpoint in another format");
  add_common(sub, c);
  sub->add_option("checkpoint", checkpoint, "nnopt checkpoint file")->required();
  sub->add_option("--format", format, "output format")->check(CLI::IsMember({"torchscript"}));
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      NNOPT_CHECK(!c.out.empty(), ValueError, "export: --out FILE is required");
      GraphModule model = load_model(checkpoint);
      export_torchscript(model, c.out);
      emit(c, str_cat("wrote ", c.out, " (", format, ", ", file_size(c.out), " bytes)\n"),
           json{{"out", c.out}, {"format", format}, {"bytes", file_size(c.out)}}.dump());
      return 0;
    };
  });
}

void register_import(CLI::App& app, Runner& run) {
  static Common c;
  static std::string file, shape;
  auto* sub = app.add_subcommand("import", "read a TorchScript model saved by PyTorch");
  add_common(sub, c);
  sub->add_option("file", file, "TorchScript file (torch.jit.script or trace)")->required();
  sub->add_option("--input-shape", shape, "per-sample input shape, e.g. 1,28,28")->required();
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      NNOPT_CHECK(!c.out.empty(), ValueError, "import: --out CHECKPOINT is required");
      GraphModule model = import_torchscript_module(file, parse_shape(shape, "--input-shape"));
      save_model(c.out, model, json{{"kind", "model"}, {"imported_from", file}}.dump());
      const Graph& g = model->graph();
      emit(c,
           str_cat("imported ", file, ": ", g.size(), " nodes, ", g.num_params(), " params, ",
                   g.macs(), " MACs -> ", c.out, "\n"),
           json{{"out", c.out}, {"nodes", g.size()}, {"params", g.num_params()}, {"macs", g.macs()}}
               .dump());
      return 0;
    };
  });
}

// ------------------------------------------------------------------ demo

void register_demo(CLI::App& app, Runner& run) {
  static Common c;
  static DemoOptions o;
  auto* sub = app.add_subcommand("demo", "the main job: train, measure and tabulate on Fashion-MNIST");
  add_common(sub, c);
  sub->add_option("--model", o.model, "zoo model to train");
  sub->add_option("--epochs", o.epochs, "training epochs")->check(CLI::PositiveNumber);
  sub->add_option("--batch-size", o.batch_size, "mini-batch size")->check(CLI::PositiveNumber);
  sub->add_option("--lr", o.lr, "peak learning rate")->check(CLI::PositiveNumber);
  sub->add_option("--data-dir", o.data_dir, "folder with the Fashion-MNIST IDX files");
  sub->add_option("--limit", o.limit, "use only N samples per split (0 = all)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--resume", o.resume, "continue an interrupted demo");
  sub->callback([&run] {
    run = [] {
      apply_common(c);
      if (!c.out.empty()) o.out_dir = c.out;
      o.seed = c.seed;
      o.progress = c.progress;
      double t0 = now_seconds();
      DemoResult r = run_demo(o);
      emit(c,
           str_cat("\nnnopt demo on Fashion-MNIST (", threads(), " threads, ",
                   format_duration(now_seconds() - t0), ")\n\n", r.table.to_text()),
           r.json);
      return 0;
    };
  });
}

}  // namespace nnopt::cli
