// A LoRA adapter as llama.cpp's `--lora` loads it: a GGUF file with general.type "adapter",
// adapter.type "lora", adapter.lora.alpha, and for each adapted weight W (GGUF name) the tensors
// W.lora_a [rank, in] and W.lora_b [out, rank]. llama.cpp scales each pair by alpha / rank, and
// for Llama-style bases (llama, mistral, smollm3) its q/k rows are in its RoPE order, so lora_b of
// q and k is permuted the same way its converter permutes the base. Phi-3's fused qkv_proj and
// gate_up_proj adapt attn_qkv and ffn_up, as llama.cpp's adapter converter names them.
#pragma once
#include <filesystem>
#include <string>

#include "trainer/io/adapter_file.h"
#include "trainer/model_config.h"

namespace lora {

// The base's architecture and heads, from a model folder's config.json or a GGUF file.
ModelConfig adapter_base_config(const std::filesystem::path& model);

// Writes `adapter` (in Hugging Face layout, as every adapter we hold is) for a base described by
// `base`, atomically. Pairs whose scale * rank differ from the first pair's have the difference
// folded into lora_b, since the file carries one alpha.
void write_gguf_adapter(const AdapterFile& adapter, const ModelConfig& base,
                        const std::filesystem::path& out);

}  // namespace lora
