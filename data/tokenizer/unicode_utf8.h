// UTF-8 decoding and the Unicode character properties the tokenizer needs (from ICU), with the
// same meaning as Rust's `char` methods that Hugging Face `tokenizers` calls.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lora::data::unicode {

// Length in bytes of the UTF-8 sequence that starts with `lead` (1 for a stray byte).
inline std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// Decodes the code point at `pos` of valid UTF-8 and advances `pos` past it.
char32_t next_code_point(std::string_view s, std::size_t& pos);
// The code point that ends at `end` (exclusive) of valid UTF-8; `start` receives its first byte.
char32_t previous_code_point(std::string_view s, std::size_t end, std::size_t& start);

void append_utf8(std::string& out, char32_t cp);

// Byte offset of the first invalid UTF-8 sequence (overlong, surrogate, truncated, > U+10FFFF),
// or npos when `s` is valid.
std::size_t find_invalid_utf8(std::string_view s);
// Throws std::runtime_error naming `what` and the byte offset when `s` is not valid UTF-8.
void require_valid_utf8(std::string_view s, std::string_view what);
// Replaces every invalid sequence with U+FFFD, as Rust's String::from_utf8_lossy does.
std::string utf8_lossy(std::string_view bytes);

bool is_ascii(std::string_view s);

bool is_whitespace(char32_t c);       // Unicode White_Space (Rust char::is_whitespace)
bool is_numeric(char32_t c);          // general category Nd, Nl or No (Rust char::is_numeric)
bool is_punctuation(char32_t c);      // ASCII punctuation or general category P*
bool is_word_char(char32_t c);        // Rust regex `\w`: Alphabetic, M, Nd, Pc, Join_Control
bool is_nonspacing_mark(char32_t c);  // general category Mn
// Full lowercase mapping of one code point (Rust char::to_lowercase), appended as UTF-8.
void append_lowercase(std::string& out, char32_t c);

}  // namespace lora::data::unicode
