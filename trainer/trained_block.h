// Full fine-tuning: the tensors of a transformer block trained as f32 values in place of the
// frozen base's (mlx-lm's fine_tune_type "full": every parameter of the last N blocks, the seven
// linears, their biases where the family has them, and the block's norms). Embeddings, the final
// norm and the output head stay frozen, as in mlx-lm.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "autograd/tape.h"
#include "trainer/model.h"
#include "trainer/setting_error.h"

namespace lora {

// A block's trainable tensors. The first seven are the linears, in Proj order.
enum class BlockTensor {
  q,
  k,
  v,
  o,
  gate,
  up,
  down,
  q_bias,
  k_bias,
  v_bias,
  input_norm,
  post_attention_norm,
  q_norm,
  k_norm,
  pre_ffn_norm,
  post_ffn_norm,
};
inline constexpr int kNumBlockTensors = 16;

inline BlockTensor block_linear(Proj p) { return static_cast<BlockTensor>(static_cast<int>(p)); }
// The bias of a linear (q, k and v have one in qwen2), or nullopt.
std::optional<BlockTensor> block_bias(Proj p);
// The tensor's name inside its block, as checkpoints spell it: "self_attn.q_proj.weight".
std::string_view block_tensor_name(BlockTensor t);
bool is_block_norm(BlockTensor t);

struct TrainedBlock {
  int64_t layer = 0;
  // Indexed by BlockTensor; empty where the base has no such tensor (biases, q/k and sandwich
  // norms of other families). Norms hold the values the forward multiplies by: for families whose
  // norms scale by (1 + w) (Gemma), 1 + w, as the loaded base holds them.
  std::array<ag::Parameter, kNumBlockTensors> tensors;

  ag::Parameter& at(BlockTensor t) { return tensors[static_cast<int>(t)]; }
  const ag::Parameter& at(BlockTensor t) const { return tensors[static_cast<int>(t)]; }
  bool has(BlockTensor t) const { return at(t).value.numel() > 0; }
};

// Full fine-tuning asked of a base whose block linears are stored quantized (setting
// "fine_tune_type"): the CLI adds how to make a float copy.
class FloatBaseRequired : public SettingError {
 public:
  using SettingError::SettingError;
};

// The base's tensor as f32 (shape [out, in] for linears, [n] otherwise); empty when absent.
// Throws FloatBaseRequired for a linear stored quantized (MLX or GGUF block types):
// full fine-tuning trains f32 weights and has nothing exact to start from.
Tensor base_block_tensor(const Model& model, int64_t layer, BlockTensor t);

// f32 copies of every tensor of the last `num_layers` blocks (-1: all), ready to train.
std::vector<TrainedBlock> trained_blocks_from(const Model& model, int num_layers);

// What the forward adds to a stored norm weight (1 for Gemma's (1 + w) norms, else 0): files hold
// the stored value, trained blocks the value plus this.
float norm_offset(const ModelConfig& config);

}  // namespace lora
