// A LoRA adapter as it sits on disk, independent of any base model: the A/B pairs of each adapted
// linear, their scales, and the config fields worth carrying between the MLX-LM and PEFT layouts.
// This is what export and conversion work on (the base of an adapter is often not at hand);
// load_adapter (adapter_io.h) turns it into a LoraAdapter checked against a loaded model.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "autograd/dtype.h"

namespace lora {

enum class AdapterFormat { mlx, peft };

inline constexpr const char* kMlxWeights = "adapters.safetensors";
inline constexpr const char* kPeftWeights = "adapter_model.safetensors";
inline constexpr const char* kAdapterConfigName = "adapter_config.json";

// The one way an adapter's files reach a folder: `fill` writes them into a staging folder, which
// becomes `dir` when there is none. An existing folder (a training run's, with checkpoints/ and
// metrics.jsonl) keeps its other files: each staged file is renamed over its old copy (the weights
// first, then `after_weights` runs), and then the other layout's weights file, if any, is removed
// (a folder holding both is refused by the reader, so a crash before that point cannot go
// unnoticed).
void install_adapter_files(const std::filesystem::path& dir, const char* weights_name,
                           const char* other_name,
                           const std::function<void(const std::filesystem::path&)>& fill,
                           const std::function<void()>& after_weights);

std::string_view adapter_format_name(AdapterFormat f);          // "mlx" | "peft"
AdapterFormat adapter_format_from_name(std::string_view name);  // throws on anything else

// The LoRA pair of one adapted linear, always held in PEFT orientation.
struct AdapterPair {
  int64_t layer = 0;
  std::string module;  // path inside the block: "self_attn.q_proj", "mlp.down_proj"
  int64_t rank = 0;
  int64_t in = 0;                // input features of the adapted linear
  int64_t out = 0;               // output features
  std::vector<float> a;          // [rank, in]
  std::vector<float> b;          // [out, rank]
  double scale = 1.0;            // y += scale * x A^T B^T
  std::vector<float> magnitude;  // DoRA's m [out] (autograd/dora.h); empty for LoRA
  DType dtype = DType::F32;      // element type as stored (written back the same way)
  std::string a_name;            // tensor names as read, for messages
  std::string b_name;

  // "model.layers.3.self_attn.q_proj"
  std::string module_key() const;
  // The short module name PEFT targets: "q_proj".
  std::string short_name() const;
};

// The run that trained an adapter, for its model card (README.md).
struct TrainingRun {
  std::string data;  // the data as the user named it
  int64_t steps = 0;
  std::optional<double> train_loss;  // the last reported training loss
  std::optional<double> valid_loss;  // the final validation loss
  std::optional<double> test_loss;
};

struct AdapterFile {
  AdapterFormat format = AdapterFormat::mlx;  // the layout it was read from
  std::filesystem::path source;               // the weights file it was read from
  std::vector<AdapterPair> pairs;             // sorted by (layer, module)
  // Layer count of the base model when known (from the model, or set by the caller). Without it
  // the last adapted layer is taken to be the base's last layer (MLX-LM adapts the last N blocks).
  std::optional<int64_t> base_num_layers;
  std::string base_model;  // PEFT base_model_name_or_path / MLX-LM "model"
  double dropout = 0.0;
  // PEFT's own way of giving the scale, kept so PEFT -> PEFT writes the same fields.
  std::optional<double> peft_alpha;
  bool rslora = false;
  bool dora = false;  // PEFT use_dora / MLX-LM fine_tune_type "dora": every pair has a magnitude
  // MLX-LM training arguments (everything but the LoRA fields), carried into MLX output.
  nlohmann::json mlx_run_args = nlohmann::json::object();
  std::optional<TrainingRun> training;  // set when written at the end of a training run

  // Reads an adapter folder, or its .safetensors file with adapter_config.json beside it. The
  // layout is detected from the files; prefixes such as `base_model.model.` and `language_model.`
  // are stripped. Pickle files are refused; an adapter with no LoRA tensor is an error. A PEFT
  // file is read as PEFT reads it (rank_pattern/alpha_pattern regular expressions,
  // target_modules, layers_to_transform); a file with anything PEFT would apply and this reader
  // cannot (modules_to_save, LoRA on lm_head/embed_tokens, DoRA, fan_in_fan_out, ...) is refused.
  static AdapterFile read(const std::filesystem::path& path);

  // Writes the adapter in `format` into `dir`, with a README.md model card. MLX-LM output needs
  // base_num_layers (its num_layers counts from the last block); PEFT output lists the adapted
  // layers in layers_to_transform unless they are known to be all of the base's. A new folder
  // appears whole or not at all; in an existing folder each file is replaced atomically, an
  // adapter of the other format there is replaced (its weights file removed), and other files
  // (checkpoints, logs) are kept. Everything is validated before the first byte is written.
  // `after_weights` (tests' fault injection) runs once the weights are in place and the rest not.
  void write(const std::filesystem::path& dir, AdapterFormat format,
             const std::function<void()>& after_weights = {}) const;

  // The rank shared by all pairs (throws when they differ or there are none).
  int64_t common_rank() const;
  // The scale shared by all pairs, or nullopt when they differ.
  std::optional<double> common_scale() const;
  std::vector<std::string> module_names() const;  // distinct modules, "self_attn.q_proj", sorted
  std::vector<int64_t> layers() const;            // distinct adapted layers, ascending
  // What the adapter holds, for `lora inspect`/export reports.
  nlohmann::json summary() const;
};

// "0-23" or "0-3, 7, 9-11": layer indices (ascending), compactly.
std::string layer_ranges(const std::vector<int64_t>& layers);

}  // namespace lora
