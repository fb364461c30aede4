// The settings of a training run: one table of fields that is at once the `lora train` flags, the
// keys of a --config file (TOML or JSON), the arguments written into adapter_config.json, and the
// config a checkpoint stores and a resumed run is checked against.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <variant>
#include <vector>

namespace lora {

// Defaults follow mlx-lm's where the concept is the same.
struct TrainOptions {
  // What to train on and where to write.
  std::string model;
  std::string data;
  std::string train_file;  // --train FILE / --valid FILE override the data folder's files
  std::string valid_file;
  std::string adapter_path = "adapters";
  std::string format = "mlx";       // mlx | peft
  std::string resume_adapter_file;  // start from these adapter weights (a fresh run otherwise)
  std::string resume;               // checkpoint (or adapter folder with checkpoints/) to continue
  // The run.
  int64_t iters = 1000;
  int64_t batch_size = 4;
  int64_t grad_accumulation_steps = 1;
  double learning_rate = 1e-5;
  std::string optimizer = "adam";        // adam | adamw | sgd
  double weight_decay = 0.01;            // adamw only
  double momentum = 0.0;                 // sgd only
  std::string lr_schedule = "constant";  // constant | linear | cosine
  int64_t warmup = 0;
  double warmup_init = 0.0;  // warmup starts at lr * this
  double grad_clip = 0.0;    // max global gradient norm; 0 = off
  int64_t seed = 0;
  bool grad_checkpoint = false;
  std::string compute_dtype = "f32";  // f32 | bf16: precision of the frozen base's matmuls
  // Data.
  bool mask_prompt = false;
  int64_t max_seq_length = 2048;
  std::string chat_format = "template";  // template | llama2
  int64_t max_line_bytes = 64ll << 20;
  // LoRA.
  int64_t num_layers = 16;  // last N blocks; -1 = all
  int64_t rank = 8;
  double scale = 20.0;
  double alpha = 0.0;  // when > 0: scale = alpha / rank (or / sqrt(rank) with --rslora)
  bool rslora = false;
  double dropout = 0.0;
  std::vector<std::string> lora_keys = {"q_proj", "v_proj"};
  // Base model storage.
  int64_t quantize = 0;  // quantize float linears at load to 4 or 8 bits; 0 = as stored
  int64_t q_group_size = 64;
  // Reporting, evaluation, checkpoints.
  int64_t steps_per_report = 10;
  int64_t steps_per_eval = 200;
  int64_t val_batches = 25;  // -1 = the whole validation set
  int64_t save_every = 100;
  int64_t keep_checkpoints = 3;
  bool test = false;
  int64_t test_batches = 500;  // -1 = the whole test set

  // The settings as JSON (snake_case keys, mlx-lm spelling), without resume/config controls.
  nlohmann::ordered_json to_json() const;
  // Checks values (ranges, names) and throws std::runtime_error naming the flag.
  void validate() const;
};

// One row of the table: the flag (without "--"), the member it sets, its help.
using FieldRef =
    std::variant<std::string TrainOptions::*, int64_t TrainOptions::*, double TrainOptions::*,
                 bool TrainOptions::*, std::vector<std::string> TrainOptions::*>;
struct TrainField {
  const char* flag;  // "learning-rate"
  FieldRef member;
  const char* help;
  // Part of what makes a run the same run: a resumed run must agree on it with its checkpoint.
  bool identity = false;
};
const std::vector<TrainField>& train_fields();

// Registers every field as a flag of `cmd`, plus --config FILE (TOML or JSON; a key is a flag's
// long name with '-' or '_'; mlx-lm's nested lora_parameters {rank, scale, dropout, keys} is
// accepted) and --print-config. Values on the command line override the config file.
struct TrainFlags {
  bool print_config = false;
  std::string config_file;
};
void add_train_flags(CLI::App& cmd, TrainOptions& options, TrainFlags& flags);

// Applies a --config file to the flags of `cmd` that the command line did not set (CLI11 reads
// config files only for the top-level app, so subcommands apply theirs here, after parsing).
// Unknown keys and bad values are errors naming the file and the key.
void apply_config_file(CLI::App& cmd, const std::string& path);

// Fills the fields that `cmd` did not get (neither on the command line nor from --config) from
// `saved` (a to_json() object, e.g. a checkpoint's): a resumed run needs only --resume.
void fill_unset_from(const CLI::App& cmd, TrainOptions& options, const nlohmann::json& saved);

// Where `options` disagrees with `saved` on an identity field: "--rank is 16 here but 8 in the
// checkpoint; ..." (empty when compatible).
std::string identity_differences(const TrainOptions& options, const nlohmann::json& saved);

// A CLI11 config reader for TOML or JSON (detected from the text), with key spellings normalized.
std::shared_ptr<CLI::Config> make_train_config_reader();

}  // namespace lora
