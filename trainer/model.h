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
  std::vector<float> q_norm, k_norm;  // qwen3 (empty otherwise)
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

  const FrozenWeight& head() const { return lm_head ? *lm_head : embed; }
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

}  // namespace lora
