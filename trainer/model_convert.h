// Converting a model folder's storage: quantize a float model to MLX affine 4/8-bit (the layout
// MLX-LM loads), or write every weight as f32/f16/bf16 (dequantizing a quantized model).
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>

#include "autograd/dtype.h"

namespace lora {

struct ConvertOptions {
  int quantize_bits = 0;  // 0 = no quantization
  int group_size = 64;
  bool quantize_embedding = true;  // MLX-LM quantizes embed_tokens and lm_head too
  // Float type of the float tensors (and of a quantized model's scales); default: as stored.
  std::optional<DType> dtype;
  uint64_t max_shard_bytes = 5'000'000'000;
};

struct ConvertReport {
  int64_t quantized = 0;    // linears written quantized
  int64_t dequantized = 0;  // quantized linears written as floats
  int64_t kept_float = 0;   // 2-D weights that stayed float (their input size does not fit groups)
  int64_t copied = 0;       // other tensors
};

// Writes the converted model folder to out_dir atomically (config, weights, tokenizer files).
ConvertReport convert_model(const std::filesystem::path& model_dir,
                            const std::filesystem::path& out_dir, const ConvertOptions& options);

}  // namespace lora
