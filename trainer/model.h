// A loaded, frozen base model: config plus every weight in its stored format.
#pragma once
#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "autograd/frozen_weight.h"
#include "trainer/model_config.h"

namespace lora {

// The seven adaptable projections of a block, in a fixed order.
enum class Proj { q, k, v, o, gate, up, down };
inline constexpr int kNumProj = 7;
// "q_proj", "self_attn.q_proj", "mlp.gate_proj", ... (the HF module names).
std::string_view proj_name(Proj p);                         // "q_proj"
std::string_view proj_module_path(Proj p);                  // "self_attn.q_proj"
std::optional<Proj> proj_from_name(std::string_view name);  // accepts both spellings

struct LayerWeights {
  std::array<FrozenWeight, kNumProj> proj;    // indexed by Proj
  std::vector<float> q_bias, k_bias, v_bias;  // qwen2 (empty otherwise)
  std::vector<float> input_norm, post_attention_norm;
  std::vector<float> q_norm, k_norm;  // qwen3, gemma3 (empty otherwise)
  // Gemma's sandwich norms (post_attention_norm then normalizes the attention output).
  std::vector<float> pre_ffn_norm, post_ffn_norm;
  FrozenWeight& at(Proj p) { return proj[static_cast<int>(p)]; }
  const FrozenWeight& at(Proj p) const { return proj[static_cast<int>(p)]; }
};

struct Model {
  ModelConfig config;
  std::filesystem::path dir;
  FrozenWeight embed;
  std::optional<FrozenWeight> lm_head;  // empty when tied to embed
  std::vector<float> final_norm;
  std::vector<LayerWeights> layers;
  std::vector<float> rope_inv_freq;
  std::vector<float> rope_inv_freq_local;  // Gemma 3's sliding layers (empty otherwise)
  // Gemma: embeddings times this, the product rounded to embed_dtype (the checkpoint's dtype,
  // as the reference implementation computes it). 0 = no scaling.
  float embed_scale = 0;
  DType embed_dtype = DType::F32;
  std::string tensor_prefix = "model.";  // "language_model.model." in gemma3 vision checkpoints

  const FrozenWeight& head() const { return lm_head ? *lm_head : embed; }
  const std::vector<float>& rope_inv_freq_of(int64_t layer) const {
    return config.uses_local_rope(layer) ? rope_inv_freq_local : rope_inv_freq;
  }
  std::size_t stored_bytes() const;
};

struct LoadOptions {
  // Quantize float linears at load (MLX affine); 0 = keep as stored.
  int quantize_bits = 0;
  int quantize_group_size = 64;
  // bf16 weights are kept as bf16 unless this is set (then widened to f32).
  bool widen_bf16 = false;
};

// Throws SettingError ("quantize" or "q_group_size") unless MLX's affine format allows these:
// the one check of a requested quantization, for loading, converting and training alike.
void check_quantization(int bits, int group_size);

Model load_model(const std::filesystem::path& dir, const LoadOptions& options = {});

class WeightSet;
// Where a checkpoint keeps the text model's tensors: "model." normally; gemma3 vision + text
// checkpoints use "language_model.model." (original layout) or "model.language_model."
// (transformers 4.52+).
std::string text_model_prefix(const WeightSet& weights);

// Sets the constants a config implies that the weights do not carry: Gemma's embedding scale
// (rounded to embed_dtype) and the sliding layers' RoPE frequencies.
void set_family_constants(Model& model);

}  // namespace lora
