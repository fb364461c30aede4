// config.json of a Hugging Face Llama-family model.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace lora {

struct RopeScaling {    // rope_scaling {"rope_type": "llama3" | "linear" | "longrope", ...}
  bool linear = false;  // "linear": every frequency divided by factor (Gemma 3's global layers)
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_position_embeddings = 8192;
  // "longrope" (Phi-3 128k, Phi-3.5, Phi-4-mini): frequency i divided by short_factor[i], or by
  // long_factor[i] for sequences longer than original_max_position_embeddings; cos and sin scaled
  // by attention_factor.
  bool longrope = false;
  std::vector<float> short_factor, long_factor;
  float attention_factor = 1.0f;
};

enum class Activation { silu, gelu_tanh };

struct ModelConfig {
  std::string model_type;  // llama | mistral | qwen2 | qwen3 | gemma2 | gemma3_text | gemma3 |
                           // smollm3 | phi3
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
  // Gemma 2/3 and SmolLM3 (the defaults are the Llama layout).
  Activation hidden_act = Activation::silu;  // the MLP's gate activation
  bool norm_plus_one = false;       // Gemma RMSNorm scales by (1 + weight) (the loader adds the 1)
  bool sandwich_norms = false;      // Gemma: norms after attention and MLP, and before the MLP
  bool scale_embeddings = false;    // Gemma: embeddings * sqrt(hidden_size), in the model's dtype
  float query_pre_attn_scalar = 0;  // Gemma: scores scaled by its rsqrt (0: head_dim's)
  float attn_logit_softcap = 0;     // Gemma 2: scores -> cap * tanh(scores / cap)
  float final_logit_softcap = 0;    // Gemma 2: logits -> cap * tanh(logits / cap)
  int64_t sliding_window = 0;       // keys a sliding layer's query sees, its own included
  std::vector<uint8_t> sliding_layers;  // per layer, 1 = sliding window attention
  float rope_local_theta = 0;           // Gemma 3: sliding layers' RoPE base, unscaled (0: none)
  std::vector<uint8_t> rope_layers;     // per layer, 0 = no RoPE (SmolLM3); empty: all use it
  // Phi-3: fused qkv_proj and gate_up_proj; RoPE on the first rotary_dim features of each head
  // (partial_rotary_factor * head_dim; Phi-4-mini: 0.75), the rest passed through.
  bool fused_projections = false;
  int64_t rotary_dim = 0;
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;
  nlohmann::json raw;  // the file as read, written back by merge

  // Unknown architecture or unsupported value: an error naming the field.
  static ModelConfig from_json(const nlohmann::json& j, const std::string& source = "config.json");
  static ModelConfig load(const std::filesystem::path& model_dir);
  // theta^(-2i/rotary_dim), with llama3, linear or longrope scaling applied when set
  // (`long_factors`: longrope's long ones); `local`: Gemma 3's sliding layers (rope_local_theta,
  // unscaled).
  std::vector<float> rope_inv_freq(bool local = false, bool long_factors = false) const;
  // The factor RoPE's cos and sin are multiplied by (longrope's attention factor; 1 otherwise).
  float rope_attention_factor() const;
  // The sliding window of a layer's attention (0 = it sees every earlier key).
  int64_t window_of(int64_t layer) const;
  bool uses_rope(int64_t layer) const;
  bool uses_local_rope(int64_t layer) const { return rope_local_theta > 0 && window_of(layer) > 0; }
};

}  // namespace lora
