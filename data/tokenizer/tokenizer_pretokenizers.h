// tokenizer.json pre-tokenizers: ByteLevel, Split, Digits, Metaspace, Whitespace,
// WhitespaceSplit, Punctuation, CharDelimiterSplit, BertPreTokenizer and Sequence.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer_text.h"

namespace lora::data {

// A piece of the input on its way to the model.
struct Piece {
  NormalizedText text;
  int32_t added_id = -1;    // >= 0: an added token, already decided
  bool byte_level = false;  // the model reads the ByteLevel characters of text's bytes
  bool at_input_start = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Splits (and may transform) every piece that is not an added token.
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// nullptr for a null pre-tokenizer. A ByteLevel that is the last step leaves its byte-to-char
// mapping to the model (Piece::byte_level), which saves a copy of every piece.
std::unique_ptr<PreTokenizer> make_pre_tokenizer(const nlohmann::json& j, const std::string& where);

}  // namespace lora::data
