// A loaded, frozen base model: config plus every weight in its stored format.
#pragma once
#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/frozen_weight.h"
#include "trainer/model_config.h"

namespace lora {

// The adaptable projections of a block, in a fixed order. A Llama-layout block has the seven
// separate ones; Phi-3 stores q/k/v as one qkv_proj ([q; k; v] rows) and gate/up as one
// gate_up_proj ([gate; up] rows), kept fused as the checkpoint has them.
enum class Proj { q, k, v, o, gate, up, down, qkv, gate_up };
inline constexpr int kNumProj = 9;
inline constexpr std::array<Proj, 7> kSeparateProjs{Proj::q,    Proj::k,  Proj::v,   Proj::o,
                                                    Proj::gate, Proj::up, Proj::down};
inline constexpr std::array<Proj, 4> kFusedProjs{Proj::qkv, Proj::o, Proj::gate_up, Proj::down};
// The projections a block of this config has (kFusedProjs when config.fused_projections).
std::span<const Proj> block_projs(const ModelConfig& config);
// The projection of this config's blocks that computes p: on a fused model q/k/v give qkv and
// gate/up give gate_up; on a separate one qkv gives {q, k, v} and gate_up {gate, up}.
std::vector<Proj> projs_for(const ModelConfig& config, Proj p);
// The projections of `config`'s blocks that `keys` select, in Proj order: on a fused model
// (Phi-3) q/k/v_proj select qkv_proj and gate/up_proj select gate_up_proj, as neither PEFT nor
// MLX-LM can adapt part of a fused linear; on a separate one qkv_proj selects q/k/v_proj.
std::vector<Proj> block_keys(const ModelConfig& config, const std::vector<Proj>& keys);

// "q_proj", "self_attn.q_proj", "mlp.gate_proj", ... (the HF module names).
std::string_view proj_name(Proj p);                         // "q_proj"
std::string_view proj_module_path(Proj p);                  // "self_attn.q_proj"
std::optional<Proj> proj_from_name(std::string_view name);  // accepts both spellings
// The checkpoint name of a block's module: "model.layers.3." + module, under another text-model
// prefix (text_model_prefix) where a checkpoint has one.
std::string layer_module_name(int64_t layer, std::string_view module,
                              std::string_view top = "model.");
std::string layer_module_name(int64_t layer, Proj p, std::string_view top = "model.");

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
  // LongRoPE: the frequencies for sequences past original_max_position_embeddings (long_factor;
  // rope_inv_freq then holds the short_factor ones), empty otherwise.
  std::vector<float> rope_inv_freq_long;
  // Gemma: embeddings times this, the product rounded to embed_dtype (the checkpoint's dtype,
  // as the reference implementation computes it). 0 = no scaling.
  float embed_scale = 0;
  DType embed_dtype = DType::F32;
  std::string tensor_prefix = "model.";  // "language_model.model." in gemma3 vision checkpoints

  const FrozenWeight& head() const { return lm_head ? *lm_head : embed; }
  // The frequencies of a layer for a pass whose last position is positions - 1 (LongRoPE, as
  // transformers does, switches every position to the long factors once the sequence is longer
  // than original_max_position_embeddings).
  const std::vector<float>& rope_inv_freq_of(int64_t layer, int64_t positions = 0) const {
    if (config.uses_local_rope(layer)) return rope_inv_freq_local;
    if (!rope_inv_freq_long.empty() &&
        positions > config.rope_scaling->original_max_position_embeddings)
      return rope_inv_freq_long;
    return rope_inv_freq;
  }
  std::size_t stored_bytes() const;
};

struct LoadOptions {
  // Quantize float linears at load (MLX affine); 0 = keep as stored.
  int quantize_bits = 0;
  int quantize_group_size = 64;
  // For generation with int8 decode activations: a GGUF file's Q4_0 matrices (whole octets of
  // rows) are rewritten into GgmlLayout::Q4_0Octets, which the int8 decode kernel reads fastest,
  // where the file was read into memory (not mapped, as files above a quarter of RAM are). Any
  // other product (f32 activations, prompts, training) widens such rows, as it does any Q4_0.
  bool int8_decode_layout = false;
};

// Throws SettingError ("quantize" or "q_group_size") unless MLX's affine format allows these:
// the one check of a requested quantization, for loading, converting and training alike.
void check_quantization(int bits, int group_size);

// Reads and checks a model folder. Weights stay as stored (f32, bf16, MLX-quantized; f16 and f64
// are widened to f32) unless options.quantize_bits asks for quantization.
Model load_model(const std::filesystem::path& dir, const LoadOptions& options = {});

class WeightSet;
// Where a checkpoint keeps the text model's tensors: "model." normally; gemma3 vision + text
// checkpoints use "language_model.model." (original layout) or "model.language_model."
// (transformers 4.52+).
std::string text_model_prefix(const WeightSet& weights);

// Sets the constants a config implies that the weights do not carry: Gemma's embedding scale
// (rounded to embed_dtype), the sliding layers' RoPE frequencies and LongRoPE's two tables.
void set_family_constants(Model& model);

}  // namespace lora
