// config.json of a Hugging Face Llama-family model.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace lora {

struct RopeScaling {  // rope_scaling {"rope_type": "llama3", ...}
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string model_type;  // llama | mistral | qwen2 | qwen3
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t vocab_size = 0;
  int64_t max_position_embeddings = 2048;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  std::optional<RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;    // q/k/v biases (qwen2: always)
  bool qk_norm = false;           // qwen3
  std::optional<int> quant_bits;  // "quantization": {"bits", "group_size"} (MLX)
  std::optional<int> quant_group_size;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  nlohmann::json raw;  // the file as read, written back by merge

  // Unknown architecture or unsupported value: an error naming the field.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  static ModelConfig load(const std::filesystem::path& model_dir);
  // theta^(-2i/head_dim), with llama3 rope scaling applied when set.
  std::vector<float> rope_inv_freq() const;
};

}  // namespace lora
