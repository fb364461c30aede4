// A Hugging Face tokenizer.json (BPE models: byte-level and SentencePiece-style with byte
// fallback), reproducing HF `tokenizers` bit for bit: normalizer, pre-tokenizer, model,
// post-processor, decoder, and added tokens.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lora::data {

struct BpeTables;

struct Encoding {
  std::vector<int32_t> ids;
  // Byte range [first, second) of each token in the input text (tokens added by the
  // post-processor get an empty range at 0). Used to find which tokens a text span covers.
  std::vector<std::pair<std::size_t, std::size_t>> offsets;
};

class Tokenizer {
 public:
  // `path` is a tokenizer.json or a folder holding one. Unsupported components are errors that
  // name them.
  static Tokenizer load(const std::filesystem::path& path);
  static Tokenizer from_json(const nlohmann::json& j, const std::string& source = "tokenizer.json");
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  Encoding encode_with_offsets(std::string_view text, bool add_special_tokens = false) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;  // largest id + 1, added tokens included
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;

 private:
  Tokenizer();
  // `tables`, when given, holds the model's vocab and merges (read apart from `j` for speed).
  static Tokenizer build(const nlohmann::json& j, const std::string& source, BpeTables* tables);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// tokenizer_config.json: the chat template and the special tokens it refers to.
struct TokenizerConfig {
  std::optional<std::string> chat_template;
  std::optional<std::string> bos_token, eos_token, unk_token, pad_token, sep_token, cls_token,
      mask_token;
  bool add_bos_token = false;
  bool add_eos_token = false;
  // Missing file: an empty config. `dir` is a model folder.
  static TokenizerConfig load(const std::filesystem::path& dir);
};

}  // namespace lora::data
