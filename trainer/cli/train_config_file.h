// `lora train --config FILE`: a settings file in YAML (mlx-lm's own lora_config.yaml runs as it
// is), JSON or TOML, applied to the flags the command line did not set.
#pragma once
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace lora::cli {

// Applies a --config file to the flags of `cmd` that the command line did not set (CLI11 reads
// config files only for the top-level app, so subcommands apply theirs here, after parsing).
// Keys are the flags' long names with '_' or '-'. Unknown keys and bad values are errors naming
// the file and the key; returns the warnings about keys that were ignored as harmless.
std::vector<std::string> apply_config_file(CLI::App& cmd, const std::string& path);

// The settings of a config file as one flat JSON object keyed by setting name (snake_case), with
// mlx-lm's layout mapped onto this trainer's settings: lora_parameters {keys, rank, scale,
// dropout}, lr_schedule {name, arguments, warmup, warmup_init}, optimizer_config, train: true,
// training_mode: normal. mlx-lm keys that would change the run and have no equal here are
// refused naming the key; ones that do not change the trained adapter are dropped with a
// warning in `warnings`. Throws std::runtime_error naming the key.
nlohmann::json settings_from_config(nlohmann::json config, std::vector<std::string>& warnings);

}  // namespace lora::cli
