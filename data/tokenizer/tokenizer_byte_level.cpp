#include "data/tokenizer/tokenizer_byte_level.h"

#include "data/tokenizer/unicode_utf8.h"

namespace lora::data::byte_level {

namespace {
Table build() {
  Table t;
  t.char_to_byte.fill(-1);
  char32_t next_shifted = 256;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    char32_t c = printable ? static_cast<char32_t>(b) : next_shifted++;
    unicode::append_utf8(t.byte_to_utf8[b], c);
    t.char_to_byte[c] = static_cast<int16_t>(b);
  }
  return t;
}
}  // namespace

const Table& table() {
  static const Table t = build();
  return t;
}

}  // namespace lora::data::byte_level
