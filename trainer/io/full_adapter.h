// A fully fine-tuned model's files as mlx-lm writes them for fine_tune_type "full": the trained
// tensors of the chosen blocks under their model names ("model.layers.4.self_attn.q_proj.weight",
// "model.layers.4.input_layernorm.weight", ...) in adapters.safetensors, and adapter_config.json
// with fine_tune_type "full", num_layers and lora_parameters null. Values are written as f32 (the
// precision they trained in); norms as the checkpoint stores them (Gemma's w, not 1 + w).
#pragma once
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>

#include "trainer/lora.h"
#include "trainer/model.h"

namespace lora {

// Whether the adapter folder (or the .safetensors file with its config beside it) holds a full
// fine-tuning: its adapter_config.json says fine_tune_type "full".
bool is_full_adapter(const std::filesystem::path& path);

// Writes the trained blocks of `adapter` (config.full) into `dir` atomically, as save_adapter
// does for LoRA; `run_args` (the training arguments) go into adapter_config.json.
void save_full_adapter(const std::filesystem::path& dir, const LoraAdapter& adapter,
                       const Model& model, const nlohmann::json& run_args,
                       const std::function<void()>& after_weights = {});

// Reads a full fine-tuning against `model`: every tensor must be a block tensor the base has, in
// a layer it has, with the base's shape (errors name the tensor). A block in the file takes the
// base's values for any of its tensors the file leaves out (mlx-lm loads such files non-strictly).
LoraAdapter load_full_adapter(const std::filesystem::path& path, const Model& model);

}  // namespace lora
