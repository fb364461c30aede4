// Text helpers for the template engine: UTF-8 walking, JavaScript's notion of whitespace and
// number printing, case mapping, JSON string quoting. Strings are UTF-8 bytes; invalid bytes are
// carried through unchanged, one "character" each.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lora::data::jinja {

// Marks an invalid UTF-8 byte: next_code_point returns kInvalidByte | byte, outside Unicode, so
// no case mapping or whitespace rule ever applies to it.
inline constexpr char32_t kInvalidByte = 0x110000;
// Decodes the code point at `pos` and advances `pos` past it.
char32_t next_code_point(std::string_view s, std::size_t& pos);
void append_utf8(std::string& out, char32_t cp);
// Splits into characters (code points), each as its UTF-8 bytes.
std::vector<std::string> split_characters(std::string_view s);
std::size_t count_characters(std::string_view s);

// JavaScript's WhiteSpace and LineTerminator set (what \s, trim() and split() use).
bool is_js_space(char32_t cp);
std::string_view trim_start(std::string_view s);
std::string_view trim_end(std::string_view s);
std::string_view trim(std::string_view s);

std::string to_upper(std::string_view s);
std::string to_lower(std::string_view s);
// Upper-cases every ASCII letter that starts a word (the reference's /\b\w/ rule).
std::string title_case(std::string_view s);

// JavaScript's Number.prototype.toString(): 1 -> "1", 0.1 -> "0.1", 1e21 -> "1e+21".
std::string js_number(double x);
// The reference's float printing: integral values keep one decimal ("2.0"), -0 is "-0.0".
std::string float_display(double x);

// JSON.stringify of a string; with ensure_ascii every character >= U+007F becomes \uXXXX.
void append_json_string(std::string& out, std::string_view s, bool ensure_ascii);

}  // namespace lora::data::jinja
