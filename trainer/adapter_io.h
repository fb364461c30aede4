// Reading and writing LoRA adapters in the MLX-LM and PEFT layouts.
#pragma once
#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "trainer/lora.h"
#include "trainer/model.h"

namespace lora {

enum class AdapterFormat { mlx, peft };

// Writes the adapter folder atomically: MLX-LM (adapters.safetensors + adapter_config.json) or
// PEFT (adapter_model.safetensors + adapter_config.json). `run_args` (the training arguments) is
// merged into the MLX config as mlx-lm does; PEFT gets base_model_name_or_path from the model.
void save_adapter(const std::filesystem::path& dir, const LoraAdapter& adapter, const Model& model,
                  AdapterFormat format, const nlohmann::json& run_args = nlohmann::json::object());

// Reads an adapter folder (or its .safetensors file) of either format, detected from the files;
// every tensor is matched to a module of `model` with the right shape, else an error naming the
// tensor and both shapes. Pickle files are refused.
LoraAdapter load_adapter(const std::filesystem::path& path, const Model& model);

}  // namespace lora
