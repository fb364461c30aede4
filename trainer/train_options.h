// The settings of a training run: one table of fields that is at once the keys of a settings file,
// the arguments written into adapter_config.json, and the config a checkpoint stores and a resumed
// run is checked against. The CLI (trainer/cli/train_flags.h) makes a flag of each.
#pragma once
#include <cstdint>
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
  std::string train_file;  // these files override the data folder's train.jsonl / valid.jsonl
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
  std::string fine_tune_type = "lora";  // lora | dora
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
  // Checks values (ranges, names); throws SettingError naming the setting.
  void validate() const;
  float effective_lora_scale() const;
};

// One row of the table: the setting's name (the CLI's flag without "--"; the JSON key with '_'),
// the member it sets, its help.
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

// Where `options` disagrees with `saved` on an identity field: "rank is 16 here but 8 in the
// checkpoint; ..." (empty when compatible).
std::string identity_differences(const TrainOptions& options, const nlohmann::json& saved);

}  // namespace lora
