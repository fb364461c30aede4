// `lora train`'s flags: one per TrainOptions field (trainer/train_options.h), grouped for --help,
// plus --config FILE, --print-config and --resume, and the mlx-lm spellings that mean the same.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>

#include "trainer/train_options.h"

namespace lora::cli {

struct TrainFlags {
  bool print_config = false;
  std::string config_file;
};

// Registers every field as a flag of `cmd` (in --help groups: data, LoRA, optimizer, schedule,
// evaluation and checkpoints, performance, output), --config, --print-config and --resume, and
// the compatible spellings: mlx-lm's `--train` switch (also `--train FILE`, which is
// --train-file FILE) and `--valid FILE` (--valid-file).
void add_train_flags(CLI::App& cmd, TrainOptions& options, TrainFlags& flags);

// Fills the fields that `cmd` did not get (neither on the command line nor from --config) from
// `saved` (a to_json() object, e.g. a checkpoint's): a resumed run needs only --resume.
void fill_unset_from(const CLI::App& cmd, TrainOptions& options, const nlohmann::json& saved);

}  // namespace lora::cli
