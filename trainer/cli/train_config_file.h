// `lora train --config FILE`: a settings file in YAML (mlx-lm's own lora_config.yaml runs as it
// is), TOML or JSON, applied to the flags the command line did not set.
#pragma once
#include <CLI/CLI.hpp>
#include <memory>
#include <string>

namespace lora::cli {

// Applies a --config file to the flags of `cmd` that the command line did not set (CLI11 reads
// config files only for the top-level app, so subcommands apply theirs here, after parsing).
// Unknown keys and bad values are errors naming the file and the key.
void apply_config_file(CLI::App& cmd, const std::string& path);

// The reader behind apply_config_file: JSON (text starting with '{'), else TOML; keys normalized
// to flag names ('_' -> '-'), mlx-lm's nested lora_parameters {keys, rank, scale, dropout}
// flattened.
std::shared_ptr<CLI::Config> make_train_config_reader();

}  // namespace lora::cli
