// How llama.cpp's converter (convert_hf_to_gguf.py) names each model family in GGUF and what its
// runtime (src/models/<arch>.cpp) assumes of it: the facts reading and writing share.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "trainer/model_config.h"

namespace lora {

// The GGUF architecture of a Hugging Face model_type: llama (also mistral), qwen2, qwen3, gemma2,
// gemma3 (gemma3 and gemma3_text), phi3, smollm3; nullopt for any other.
std::optional<std::string> gguf_architecture_of(const std::string& model_type);
// The model_type a GGUF architecture is read as (gemma3 -> gemma3_text); nullopt if unsupported.
std::optional<std::string> model_type_of_gguf(const std::string& architecture);
inline constexpr const char* kGgufArchitectures =
    "llama, qwen2, qwen3, gemma2, gemma3, phi3, smollm3";

// The transformers class name of a model_type ("LlamaForCausalLM").
std::string hf_architecture_of(const std::string& model_type);

// Whether llama.cpp's converter permuted the q/k rows for its RoPE layout: the Llama-style
// families (llama, mistral, smollm3), named by model_type or GGUF architecture. The others use
// the NeoX layout and are stored as Hugging Face has them.
bool gguf_permutes_qk(const std::string& type);

// The scalar whose rsqrt llama.cpp scales Gemma 2/3 queries by: head_dim, except on the 27B
// shapes (46 layers for gemma2, 62 for gemma3), where it is hidden / heads.
float llama_cpp_query_pre_attn_scalar(const std::string& architecture, const ModelConfig& c);

// The sliding-window period llama.cpp's set_swa_pattern(n) gives (layer i slides when
// i % n < n - 1), matching `sliding`; nullopt when no period does.
std::optional<int64_t> sliding_window_period(const std::vector<uint8_t>& sliding);
// llama.cpp's defaults for the pattern when the file has no key: gemma3 6, gemma2 2.
int64_t default_sliding_window_period(const std::string& architecture);

// SmolLM3 in llama.cpp: every 4th layer (i + 1) % 4 == 0 has no RoPE, whatever the config said.
inline constexpr int64_t kSmolLM3NoRopeInterval = 4;

}  // namespace lora
