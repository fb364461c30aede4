// The text of a generation as it grows: ids decoded to whole UTF-8 characters, cut at the first
// stop string. Text that could be the start of a stop string is held back until it is not.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "trainer/generate.h"

namespace lora {

// Finds stop strings in text that arrives in pieces.
class StopStrings {
 public:
  explicit StopStrings(std::vector<std::string> stops);
  // Returns the text that is safe to show now. Once a stop string appears, returns the text
  // before it and stopped() turns true; later pushes return nothing.
  std::string push(std::string_view piece);
  std::string finish();  // the held-back tail (no stop string came)
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // may be the beginning of a stop string
  bool stopped_ = false;
};

class TextStream {
 public:
  TextStream(const data::Tokenizer& tokenizer, std::span<const int32_t> prompt,
             std::vector<std::string> stop_strings);
  std::string push(int32_t id);  // the new text to show (may be empty)
  std::string finish();          // what is still held back
  bool stopped() const { return stops_.stopped(); }

 private:
  StreamDecoder decoder_;
  StopStrings stops_;
};

}  // namespace lora
