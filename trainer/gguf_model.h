// A GGUF model file as the frozen base: hyperparameters from the `<arch>.*` keys, weights kept in
// their ggml types (memory-mapped, not copied), Llama q/k rows put back in Hugging Face order.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "trainer/gguf_arch.h"
#include "trainer/io/gguf_file.h"
#include "trainer/model.h"

namespace lora {

// Whether `path` names a GGUF file (a regular file starting with the "GGUF" magic).
bool is_gguf_file(const std::filesystem::path& path);

// The architectures read: llama (also Mistral, which llama.cpp writes as llama), qwen2, qwen3,
// gemma2, gemma3, phi3, smollm3 (trainer/gguf_arch.h), as llama.cpp's converter writes them.
// The config.json a Hugging Face folder of the same model would hold, built from the metadata.
nlohmann::json gguf_model_config_json(const GgufFile& file);
// That config parsed and checked; an error about a setting names the metadata key it came from.
ModelConfig gguf_model_config(const GgufFile& file);

// llama.cpp's permutation of a q or k weight's rows ([heads * head_dim, cols]): within each head
// row 2i + j of the file is row j * head_dim / 2 + i of Hugging Face's layout. `rows` is the
// GGUF row index; the result the Hugging Face row it holds.
int64_t gguf_qk_row_to_hf(int64_t row, int64_t head_dim);

// The GGUF tensor names of the adaptable projections and the other weights of block `layer`.
std::string gguf_proj_tensor(Proj p, int64_t layer);  // "blk.0.attn_q.weight"

Model load_gguf_model(const std::filesystem::path& path, const LoadOptions& options = {});

}  // namespace lora
