// A Hugging Face tokenizer (tokenizer.json + tokenizer_config.json) written as the tokenizer.ggml.*
// metadata llama.cpp reads: SentencePiece-style BPE with byte fallback as model "llama" (tokens,
// scores ranking the merges, token types), byte-level BPE as model "gpt2" (tokens, merges, token
// types, the pre-tokenizer's llama.cpp name); special ids, add_bos/add_eos, the chat template.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "trainer/io/gguf_file.h"

namespace lora {

// `vocab_size` is the model's embedding rows: ids the tokenizer leaves out are written as unused
// "[PAD<id>]" tokens, as llama.cpp's converter does. Tokenizers GGUF cannot describe (another
// model type, a pre-tokenizer llama.cpp has no name for) throw naming `source`.
void set_gguf_tokenizer(GgufWriter& w, const nlohmann::json& tokenizer,
                        const nlohmann::json& tokenizer_config, int64_t vocab_size,
                        const std::string& source);

// The same from a model folder's tokenizer.json and tokenizer_config.json (the latter optional).
void set_gguf_tokenizer_of_folder(GgufWriter& w, const std::filesystem::path& dir,
                                  int64_t vocab_size);

}  // namespace lora
