// A Llama-family model with random weights, built in memory from a config (no files): for tests
// and benchmarks that need a given shape rather than trained weights.
#pragma once
#include <cstdint>

#include "trainer/model.h"

namespace lora {

// Weights ~ U(-1/sqrt(in), 1/sqrt(in)), norms ~ 1 +- 0.1, embeddings ~ U(-1, 1); qwen2 biases when
// config.attention_bias, q/k norms when config.qk_norm, Gemma's sandwich norms when
// config.sandwich_norms (drawn as the effective scale, 1 + weight); an lm_head unless
// tie_word_embeddings.
// quantize_bits > 0 stores every projection (and an untied head) MLX-quantized where its input
// size allows. RoPE frequencies are theta^(-2i/rotary_dim) (rope_scaling ignored, but for
// LongRoPE). Phi-3 configs get fused qkv_proj and gate_up_proj.
Model make_random_model(const ModelConfig& config, uint64_t seed, int quantize_bits = 0,
                        int group_size = 64);

}  // namespace lora
