// Reading and writing LoRA adapters in the MLX-LM and PEFT layouts, against a loaded base model.
// The file-level work (layouts, key names, configs) is AdapterFile's (adapter_file.h); this file
// checks an adapter against a base and converts between AdapterFile and LoraAdapter.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "trainer/io/adapter_file.h"
#include "trainer/lora.h"
#include "trainer/model.h"

namespace lora {

// Writes the adapter folder atomically: MLX-LM (adapters.safetensors + adapter_config.json) or
// PEFT (adapter_model.safetensors + adapter_config.json). `run_args` (the training arguments) is
// merged into the MLX config as mlx-lm does; PEFT gets base_model_name_or_path from the model
// (base_model_name). `training` goes into the README.md model card.
void save_adapter(const std::filesystem::path& dir, const LoraAdapter& adapter, const Model& model,
                  AdapterFormat format, const nlohmann::json& run_args = nlohmann::json::object(),
                  const std::optional<TrainingRun>& training = std::nullopt);

// The base model as adapter configs name it: the hub-style name in config.json's _name_or_path
// ("Qwen/Qwen2.5-0.5B-Instruct") when it has one, else the model folder as the user gave it; an
// absolute path is cut to the folder's name (no paths of this machine in shared files).
// `raw_config` is the model's config.json.
std::string base_model_name(const nlohmann::json& raw_config,
                            const std::filesystem::path& model_dir);

// Reads an adapter folder (or its .safetensors file) of either format, detected from the files;
// every tensor is matched to a module of `model` with the right shape, else an error naming the
// tensor and both shapes. Pickle files, and files with tensors that are not LoRA pairs of a block
// linear, are refused (AdapterFile::read).
LoraAdapter load_adapter(const std::filesystem::path& path, const Model& model);

// The [out, in] shape of a block linear of the base, or nullopt when the base has no such linear.
using LinearShapeOf = std::function<std::optional<std::array<int64_t, 2>>(int64_t layer, Proj p)>;

// Checks that every pair adapts a projection the base has, in a layer it has, with the base's
// shape; errors name the tensor and both shapes. `base_name` says which base (for messages).
void check_adapter_against_base(const AdapterFile& adapter, int64_t base_layers,
                                const LinearShapeOf& shape_of, const std::string& base_name);
// The projection a pair adapts ("self_attn.q_proj" -> q), or nullopt for any other module.
std::optional<Proj> pair_proj(const AdapterPair& pair);

// Conversions between the on-disk and the trainable representation. to_lora_adapter checks the
// adapter against `model` first.
LoraAdapter to_lora_adapter(const AdapterFile& file, const Model& model);
AdapterFile to_adapter_file(const LoraAdapter& adapter, const Model& model);

}  // namespace lora
