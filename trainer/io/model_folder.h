// The tensors of a model folder on disk, as merge and convert rewrite them: MLX-quantized
// linears (weight + scales + biases), byte-exact copies, and writing a complete folder (config,
// weights in one file or shards with an index, the tokenizer files of the source).
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/quant.h"
#include "trainer/io/safetensors.h"

namespace lora {

struct QuantSpec {
  int bits = 4;
  int group_size = 64;
};

nlohmann::json read_model_config_json(const std::filesystem::path& model_dir);

// The quantization config.json gives the linear `prefix` ("model.layers.0.mlp.up_proj"): MLX-LM's
// per-layer entry when there is one, else the model-wide {"bits", "group_size"}; nullopt when
// the model is not quantized.
std::optional<QuantSpec> quantization_of(const nlohmann::json& config,
                                         const std::string& prefix = "");

// "model.layers.0.mlp.up_proj.weight" -> "model.layers.0.mlp.up_proj"; names without ".weight"
// are returned unchanged.
std::string weight_prefix(const std::string& weight_name);
// Whether `weight_name` is stored MLX-quantized: its .scales and .biases sit beside it.
bool is_quantized_weight(const WeightSet& weights, const std::string& weight_name);
// Whether `name` is the .scales or .biases of a quantized weight.
bool is_quantization_companion(const WeightSet& weights, const std::string& name);

// Reads prefix.weight/.scales/.biases, checking the shapes against `spec`.
QuantizedMatrix read_quantized(const WeightSet& weights, const std::string& prefix, QuantSpec spec);
// Appends prefix.weight (U32), prefix.scales and prefix.biases (in q.scale_dtype).
void append_quantized(std::vector<TensorData>& out, const std::string& prefix,
                      const QuantizedMatrix& q);
// The stored [out, in] shape of a linear, unpacking a quantized weight's columns.
std::optional<std::array<int64_t, 2>> linear_shape(const WeightSet& weights,
                                                   const nlohmann::json& config,
                                                   const std::string& weight_name);
// A byte-exact copy of a stored tensor.
TensorData copy_tensor(const WeightSet& weights, const std::string& name);
// Whether a dtype is a float type TensorData::convert can write.
bool writable_float(DType t);
// config.json's torch_dtype spelling of F32, F16, BF16.
const char* torch_dtype_name(DType t);

struct ModelFolderOptions {
  uint64_t max_shard_bytes = 5'000'000'000;  // above this the weights are split into shards
  std::string format_metadata = "pt";        // safetensors __metadata__ {"format": ...}
};

// Writes a complete model folder atomically (it appears whole or the old one stays): config.json,
// model.safetensors or model-0000i-of-0000n.safetensors + model.safetensors.index.json, and the
// tokenizer and generation files copied from `source_dir`.
void write_model_folder(const std::filesystem::path& out_dir,
                        const std::filesystem::path& source_dir, const nlohmann::json& config,
                        std::vector<TensorData> tensors, const ModelFolderOptions& options = {});

// Refuses an output folder that is the source folder itself (its files are being read).
void check_distinct_output(const std::filesystem::path& out_dir,
                           const std::filesystem::path& source_dir);

}  // namespace lora
