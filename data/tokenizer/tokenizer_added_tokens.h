// Added tokens (special or not) of tokenizer.json, found in text the way HF `tokenizers` does:
// leftmost-longest matching, then the single_word, lstrip and rstrip rules.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/tokenizer/tokenizer_regex.h"

namespace lora::data {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

// A piece of text: either an added token's match or a stretch between matches.
struct AddedSplit {
  ByteRange range;
  int32_t id = -1;  // -1: not an added token
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  // `patterns[i]` is what to look for (the content, or its normalized form) for tokens[i].
  AddedTokenMatcher(std::vector<std::string> patterns, std::vector<AddedToken> tokens);

  bool empty() const { return tokens_.empty(); }
  // Splits `text` into matches and the stretches between them, covering all of it.
  std::vector<AddedSplit> split(std::string_view text) const;

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t token = -1;                                       // index into tokens_
  };
  int32_t child(int32_t node, unsigned char byte) const;
  // Index of the longest pattern starting at `pos` and its length, or -1.
  std::pair<int32_t, std::size_t> longest_at(std::string_view text, std::size_t pos) const;

  std::vector<Node> nodes_;
  std::vector<AddedToken> tokens_;
  std::array<bool, 256> first_byte_{};
};

}  // namespace lora::data
