// nnopt command line: dispatch, config files, errors and exit codes.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <iostream>

#include "cli.h"
#include "nnopt/core/error.h"
#include "nnopt/core/file_util.h"

namespace nnopt::cli {

std::vector<std::string> expand_config(CLI::App& app, const std::vector<std::string>& args) {
  std::string path;
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "--config") {
      NNOPT_CHECK(i + 1 < args.size(), ValueError, "--config needs a file name");
      path = args[++i];
    } else if (args[i].rfind("--config=", 0) == 0) {
      path = args[i].substr(9);
    } else {
      rest.push_back(args[i]);
    }
  }
  if (path.empty()) return rest;
  NNOPT_CHECK(!rest.empty() && rest[0].rfind("-", 0) != 0, ValueError,
              "--config: name the subcommand first (nnopt train --config FILE)");
  // The subcommand path: "train", or "compare distill".
  CLI::App* sub = &app;
  size_t depth = 0;
  std::string command;
  while (depth < rest.size() && rest[depth].rfind("-", 0) != 0) {
    CLI::App* next = nullptr;
    for (CLI::App* s : sub->get_subcommands([](CLI::App*) { return true; }))
      if (s->get_name() == rest[depth]) next = s;
    if (next == nullptr) {
      NNOPT_CHECK(depth > 0, ValueError, "unknown subcommand '", rest[0], "'");
      break;
    }
    sub = next;
    command += (command.empty() ? "" : " ") + rest[depth];
    ++depth;
  }
  NNOPT_CHECK(path_exists(path), FileError, path, ": config file not found");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);  // YAML is a superset of JSON: one parser for both
  } catch (const YAML::Exception& e) {
    throw FileError(str_cat(path, ": config does not parse (line ", e.mark.line + 1, "): ", e.msg));
  }
  NNOPT_CHECK(root.IsMap(), FileError, path, ": config must be a map of option names to values");
  std::vector<std::string> out(rest.begin(), rest.begin() + static_cast<std::ptrdiff_t>(depth));
  for (const auto& kv : root) {
    std::string key = kv.first.as<std::string>();
    std::string flag = key;
    std::replace(flag.begin(), flag.end(), '_', '-');
    const CLI::Option* opt = sub->get_option_no_throw("--" + flag);
    NNOPT_CHECK(opt && flag != "config" && flag != "help", ValueError, path, ": unknown key '",
                key, "' for 'nnopt ", command, "'");
    // A list is one comma-separated value, except for a repeatable option
    // (e.g. --loss kd:T=4,alpha=0.9), which is given once per item: its items
    // may contain commas themselves.
    const bool repeatable = opt->get_multi_option_policy() == CLI::MultiOptionPolicy::TakeAll;
    std::vector<std::string> values;
    if (kv.second.IsScalar()) {
      values.push_back(kv.second.as<std::string>());
    } else if (kv.second.IsSequence()) {
      std::string joined;
      for (const auto& v : kv.second) {
        NNOPT_CHECK(v.IsScalar(), ValueError, path, ": key '", key, "' must hold plain values");
        if (repeatable) values.push_back(v.as<std::string>());
        else joined += (joined.empty() ? "" : ",") + v.as<std::string>();
      }
      if (!repeatable) values.push_back(joined);
    } else {
      throw ValueError(str_cat(path, ": key '", key, "' must be a value or a list of values"));
    }
    for (const auto& value : values) {
      if (opt->get_expected_min() == 0) {  // a flag
        out.push_back("--" + flag + "=" + value);
      } else {
        out.push_back("--" + flag);
        out.push_back(value);
      }
    }
  }
  out.insert(out.end(), rest.begin() + static_cast<std::ptrdiff_t>(depth), rest.end());
  return out;
}

}  // namespace nnopt::cli

namespace {
std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }
}  // namespace

int main(int argc, char** argv) {
  using namespace nnopt::cli;
  CLI::App app{"nnopt: makes neural networks smaller and faster, and their development cheaper"};
  app.name("nnopt");
  app.require_subcommand(1, 1);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  Runner run;
  register_train(app, run);
  register_eval(app, run);
  register_profile(app, run);
  register_export(app, run);
  register_import(app, run);
  register_demo(app, run);
  register_distill(app, run);
  register_compare_distill(app, run);
  register_compare_quant(app, run);
  register_compare_prune(app, run);
  register_prune(app, run);
  register_prune_search(app, run);
  register_quantize(app, run);
  try {
    std::vector<std::string> args(argv + 1, argv + argc);
    args = expand_config(app, args);
    std::reverse(args.begin(), args.end());  // CLI11 takes the vector back to front
    app.parse(args);
    return run ? run() : 0;
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "nnopt: " << first_line(e.what()) << " (see nnopt --help)\n";
    return 2;
  } catch (const nnopt::Error& e) {
    std::cerr << "nnopt: " << first_line(e.what()) << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "nnopt: " << first_line(e.what_without_backtrace()) << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "nnopt: internal error: " << first_line(e.what()) << "\n";
    return 1;
  }
}
