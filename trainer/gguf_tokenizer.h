// The tokenizer a GGUF file carries in its tokenizer.ggml.* metadata, as the tokenizer.json
// Hugging Face's converter would write for it, and the model-path-agnostic loaders the CLI uses
// (a model folder's tokenizer.json / tokenizer_config.json, or a GGUF file's metadata).
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/tokenizer/tokenizer.h"
#include "trainer/io/gguf_file.h"

namespace lora {

// tokenizer.ggml.model "llama" (SentencePiece BPE: tokens, scores, token types, byte fallback).
// Other models are refused naming the model.
nlohmann::json gguf_tokenizer_json(const GgufFile& file);
// The chat template, special tokens and add_bos/add_eos of the file.
data::TokenizerConfig gguf_tokenizer_config(const GgufFile& file);

// `model` is a folder or a GGUF file.
data::Tokenizer load_model_tokenizer(const std::filesystem::path& model);
data::TokenizerConfig load_model_tokenizer_config(const std::filesystem::path& model);

}  // namespace lora
