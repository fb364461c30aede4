// The BPE model of tokenizer.json: vocab, ranked merges, byte fallback, unk fusing,
// continuing_subword_prefix / end_of_word_suffix and ignore_merges, with a cache of results
// for short pieces.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer/tokenizer_file.h"

namespace lora::data {

struct ModelToken {
  int32_t id;
  uint32_t start, end;  // bytes of the piece (raw bytes for a byte-level piece)
};

class BpeModel {
 public:
  static BpeModel from_json(const nlohmann::json& model, const std::string& where);
  // `options` is the model object (its vocab and merges, if any, are ignored for `tables`).
  static BpeModel from_tables(const nlohmann::json& options, BpeTables tables,
                              const std::string& where);
  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the tokens of one piece. With `byte_level` the model reads each byte of `text` as
  // its ByteLevel character. Thread-safe.
  void tokenize(std::string_view text, bool byte_level, std::vector<ModelToken>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // nullptr when the id is not in the vocab
  int64_t max_id() const;                            // -1 for an empty vocab

 private:
  BpeModel();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lora::data
