// GPT-2's reversible byte <-> printable character table used by ByteLevel components: bytes
// that are printable Latin-1 stand for themselves, the others are shifted above U+0100.
#pragma once
#include <array>
#include <cstdint>
#include <string>

namespace lora::data::byte_level {

struct Table {
  std::array<std::string, 256> byte_to_utf8;  // the character a byte stands for, UTF-8 encoded
  std::array<int16_t, 324> char_to_byte{};    // -1 where the character is not in the table
};

const Table& table();

// The byte a character stands for, or -1.
inline int byte_of(char32_t c) {
  return c < table().char_to_byte.size() ? table().char_to_byte[c] : -1;
}

}  // namespace lora::data::byte_level
