// `lora convert --out FILE.gguf`: a model as a GGUF file llama.cpp loads. From a Hugging Face
// folder (f32/f16/bf16 or MLX-quantized, dequantized first): llama.cpp's tensor names and
// metadata keys, Llama q/k rows permuted into its RoPE order, Llama 3 RoPE scaling as
// rope_freqs.weight, the tokenizer as tokenizer.ggml.* metadata. From a GGUF file: its metadata
// and tensors as they are, each matrix requantized. Types per tensor as GgufTypePlan says.
#pragma once
#include <cstdint>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "trainer/gguf_type_plan.h"

namespace lora {

struct GgufConvertReport {
  std::map<std::string, int64_t> tensors_by_type;  // "Q4_K" -> how many tensors
  nlohmann::json to_json() const { return tensors_by_type; }
};

// Writes `out` atomically. Architectures: llama (and mistral, written as llama), qwen2, qwen3;
// anything else, a tensor the layout does not name, or a tokenizer GGUF cannot hold is an error
// naming it, before anything is written.
GgufConvertReport convert_to_gguf(const std::filesystem::path& model,
                                  const std::filesystem::path& out, const GgufTypePlan& plan);

}  // namespace lora
