// The tokenizer a GGUF file carries in its tokenizer.ggml.* metadata, as the tokenizer.json
// Hugging Face's converter would write for it, and the model-path-agnostic loaders the CLI uses
// (a model folder's tokenizer.json / tokenizer_config.json, or a GGUF file's metadata).
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "data/tokenizer/tokenizer.h"
#include "trainer/io/gguf_file.h"

namespace lora {

// tokenizer.ggml.token_type values, as GGUF files store them.
namespace gguf_token_type {
enum : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6
};
}

// tokenizer.ggml.model "llama" (SentencePiece BPE: tokens, scores, token types, byte fallback)
// or "gpt2" (byte-level BPE: tokens, merges, token types, the pre-tokenizer tokenizer.ggml.pre
// names). Other models are refused naming the model.
nlohmann::json gguf_tokenizer_json(const GgufFile& file);
// The Hugging Face pre_tokenizer a tokenizer.ggml.pre name stands for (llama-bpe, qwen2, smollm,
// gpt-2); nullopt for names not read. With it the normalizer (qwen2: NFC, else none) and whether
// whole words in the vocabulary skip the merges (Llama 3).
std::optional<nlohmann::json> gguf_pre_tokenizer_json(std::string_view pre);
nlohmann::json gguf_pre_normalizer_json(std::string_view pre);
bool gguf_pre_ignores_merges(std::string_view pre);
std::span<const std::string_view> gguf_pre_tokenizer_names();
std::string gguf_pre_tokenizer_list();  // "llama-bpe, qwen2, ..." for error messages

// The chat template, special tokens and add_bos/add_eos of the file.
data::TokenizerConfig gguf_tokenizer_config(const GgufFile& file);

// `model` is a folder or a GGUF file.
data::Tokenizer load_model_tokenizer(const std::filesystem::path& model);
data::TokenizerConfig load_model_tokenizer_config(const std::filesystem::path& model);

}  // namespace lora
