#include "trainer/cli/train_flags.h"

#include <algorithm>
#include <stdexcept>
#include <string_view>
#include <vector>

#include "trainer/cli/flag_alias.h"

namespace lora::cli {

namespace {

// The --help groups, in the order they print; each names what its flags decide. Every field of
// train_fields() belongs to exactly one (add_train_flags refuses a field left out).
struct FlagGroup {
  const char* title;
  std::vector<std::string_view> flags;
};
const std::vector<FlagGroup>& flag_groups() {
  static const std::vector<FlagGroup> groups = {
      {"Model and data (what to learn from)",
       {"model", "data", "train-file", "valid-file", "mask-prompt", "max-seq-length", "chat-format",
        "max-line-bytes"}},
      {"LoRA (which weights learn: rank-r updates B A beside the frozen linears)",
       {"fine-tune-type", "num-layers", "lora-keys", "rank", "scale", "alpha", "rslora", "dropout",
        "resume-adapter-file"}},
      {"Optimizer (how each step moves the LoRA weights)",
       {"iters", "batch-size", "grad-accumulation-steps", "learning-rate", "optimizer",
        "weight-decay", "momentum", "grad-clip", "seed"}},
      {"Schedule (the learning rate over the steps)", {"lr-schedule", "warmup", "warmup-init"}},
      {"Evaluation and checkpoints (what is measured and kept while training)",
       {"steps-per-report", "steps-per-eval", "val-batches", "save-every", "keep-checkpoints",
        "test", "test-batches"}},
      {"Performance and memory (same result, other costs)",
       {"grad-checkpoint", "compute-dtype", "quantize", "q-group-size"}},
      {"Output (where the adapter goes, in which layout)", {"adapter-path", "format"}},
  };
  return groups;
}

const char* kRunGroup = "Config and resume";

void add_field_flag(CLI::App& cmd, TrainOptions& options, const TrainField& f,
                    const std::string& group) {
  const std::string name = std::string("--") + f.flag;
  std::visit(
      [&](auto member) {
        using T = std::remove_reference_t<decltype(options.*member)>;
        CLI::Option* opt = nullptr;
        if constexpr (std::is_same_v<T, bool>) {
          opt = cmd.add_flag(name, options.*member, f.help);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          opt =
              cmd.add_option(name, options.*member, f.help)->delimiter(',')->capture_default_str();
        } else {
          // Given twice (e.g. by a script that appends flags): the last one wins.
          opt = cmd.add_option(name, options.*member, f.help)
                    ->capture_default_str()
                    ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
        }
        opt->group(group);
      },
      f.member);
}

// mlx-lm's `--train` says "train" (its lora command can also only test); `lora train` always
// trains, so the switch is accepted as it is. `--train FILE` (this CLI's older spelling) is
// --train-file FILE, unless --train-file itself was given.
void add_train_switch(CLI::App& cmd) {
  CLI::Option* file = cmd.get_option("--train-file");
  cmd.add_option_function<std::string>(
         "--train",
         [file](const std::string& value) {
           if (value.empty() || value == "true") return;
           if (value == "false")
             throw std::runtime_error(
                 "train: false (only test) is what `lora eval --adapter-path DIR` does");
           if (file->count() > 0) return;
           file->add_result(value);
           file->run_callback();
         },
         "Train (mlx-lm's switch; always on here). `--train FILE` is --train-file FILE")
      ->expected(0, 1)
      ->group(kRunGroup);
}

}  // namespace

void add_train_flags(CLI::App& cmd, TrainOptions& options, TrainFlags& flags) {
  for (const auto& f : train_fields()) {
    const bool grouped = std::any_of(flag_groups().begin(), flag_groups().end(), [&](auto& g) {
      return std::find(g.flags.begin(), g.flags.end(), f.flag) != g.flags.end();
    });
    if (!grouped) throw std::logic_error(std::string("--") + f.flag + " has no --help group");
  }
  for (const auto& group : flag_groups())
    for (const std::string_view flag : group.flags) {
      const auto f = std::find_if(train_fields().begin(), train_fields().end(),
                                  [&](const TrainField& t) { return flag == t.flag; });
      if (f == train_fields().end())
        throw std::logic_error("--help group lists --" + std::string(flag) + ", not a setting");
      add_field_flag(cmd, options, *f, group.title);
    }
  cmd.add_option("--config", flags.config_file,
                 "Settings file: YAML (mlx-lm's lora_config.yaml as it is), TOML or JSON; keys "
                 "are the flags' long names with '_' or '-'. The command line overrides it")
      ->group(kRunGroup);
  cmd.add_flag("--print-config", flags.print_config,
               "Print the resolved settings as JSON (usable as --config) and exit")
      ->group(kRunGroup);
  cmd.add_option("--resume", options.resume,
                 "Continue a run from a checkpoint folder, or the latest checkpoint of an adapter "
                 "folder; flags not given are taken from the checkpoint")
      ->group(kRunGroup);
  add_train_switch(cmd);
  add_hidden_alias(cmd, "--valid", "--valid-file");
}

void fill_unset_from(const CLI::App& cmd, TrainOptions& options, const nlohmann::json& saved) {
  for (const auto& f : train_fields()) {
    const CLI::Option* opt = cmd.get_option_no_throw(std::string("--") + f.flag);
    if (opt != nullptr && opt->count() > 0) continue;
    std::string key = f.flag;
    std::replace(key.begin(), key.end(), '-', '_');
    auto it = saved.find(key);
    if (it == saved.end()) continue;
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(options.*member)>;
          options.*member = it->template get<T>();
        },
        f.member);
  }
}

}  // namespace lora::cli
