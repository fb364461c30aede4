#include "trainer/trained_block.h"

#include <stdexcept>

namespace lora {

namespace {

constexpr std::array<std::string_view, kNumBlockTensors> kNames{
    "self_attn.q_proj.weight",
    "self_attn.k_proj.weight",
    "self_attn.v_proj.weight",
    "self_attn.o_proj.weight",
    "mlp.gate_proj.weight",
    "mlp.up_proj.weight",
    "mlp.down_proj.weight",
    "self_attn.q_proj.bias",
    "self_attn.k_proj.bias",
    "self_attn.v_proj.bias",
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    "self_attn.q_norm.weight",
    "self_attn.k_norm.weight",
    "pre_feedforward_layernorm.weight",
    "post_feedforward_layernorm.weight",
};

const std::vector<float>* base_vector(const LayerWeights& w, BlockTensor t) {
  switch (t) {
    case BlockTensor::q_bias:
      return &w.q_bias;
    case BlockTensor::k_bias:
      return &w.k_bias;
    case BlockTensor::v_bias:
      return &w.v_bias;
    case BlockTensor::input_norm:
      return &w.input_norm;
    case BlockTensor::post_attention_norm:
      return &w.post_attention_norm;
    case BlockTensor::q_norm:
      return &w.q_norm;
    case BlockTensor::k_norm:
      return &w.k_norm;
    case BlockTensor::pre_ffn_norm:
      return &w.pre_ffn_norm;
    case BlockTensor::post_ffn_norm:
      return &w.post_ffn_norm;
    default:
      return nullptr;
  }
}

// How a quantized linear is stored, for the refusal; empty for float storage.
std::string quantized_storage(const FrozenWeight& w) {
  if (w.format == WeightFormat::Quantized)
    return std::to_string(w.quant.bits) + "-bit MLX quantization (group size " +
           std::to_string(w.quant.group_size) + ")";
  if (w.format == WeightFormat::Ggml && w.ggml.type != GgmlType::F32 &&
      w.ggml.type != GgmlType::F16 && w.ggml.type != GgmlType::BF16)
    return "GGUF " + std::string(ggml_type_name(w.ggml.type));
  return "";
}

}  // namespace

std::optional<BlockTensor> block_bias(Proj p) {
  switch (p) {
    case Proj::q:
      return BlockTensor::q_bias;
    case Proj::k:
      return BlockTensor::k_bias;
    case Proj::v:
      return BlockTensor::v_bias;
    default:
      return std::nullopt;
  }
}

std::string_view block_tensor_name(BlockTensor t) { return kNames[static_cast<int>(t)]; }

bool is_block_norm(BlockTensor t) { return static_cast<int>(t) >= int(BlockTensor::input_norm); }

float norm_offset(const ModelConfig& config) { return config.norm_plus_one ? 1.0f : 0.0f; }

Tensor base_block_tensor(const Model& model, int64_t layer, BlockTensor t) {
  const LayerWeights& w = model.layers.at(static_cast<std::size_t>(layer));
  if (const std::vector<float>* v = base_vector(w, t)) {
    if (v->empty()) return Tensor();
    return Tensor({static_cast<int64_t>(v->size())}, *v);
  }
  const FrozenWeight& m = w.at(static_cast<Proj>(static_cast<int>(t)));
  if (const std::string storage = quantized_storage(m); !storage.empty())
    throw FloatBaseRequired("fine_tune_type",
                            "\"full\" trains the base weights in f32, but " +
                                layer_module_name(layer, block_tensor_name(t)) + " is stored in " +
                                storage +
                                ", which has no exact float values to train; train a LoRA or DoRA "
                                "adapter on it, or convert the model to a float one first");
  return Tensor({m.rows, m.cols}, m.to_f32());
}

std::vector<TrainedBlock> trained_blocks_from(const Model& model, int num_layers) {
  const auto n_layers = static_cast<int64_t>(model.layers.size());
  const int64_t first = num_layers < 0 ? 0 : std::max<int64_t>(0, n_layers - num_layers);
  std::vector<TrainedBlock> blocks;
  for (int64_t layer = first; layer < n_layers; ++layer) {
    TrainedBlock b;
    b.layer = layer;
    for (int i = 0; i < kNumBlockTensors; ++i) {
      ag::Parameter& p = b.tensors[static_cast<std::size_t>(i)];
      p.value = base_block_tensor(model, layer, static_cast<BlockTensor>(i));
      if (p.value.numel() > 0) p.zero_grad();
    }
    blocks.push_back(std::move(b));
  }
  return blocks;
}

}  // namespace lora
