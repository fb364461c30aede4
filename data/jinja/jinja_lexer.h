// Template source -> tokens. Whitespace handling matches @huggingface/jinja's Template: one
// trailing newline dropped, lstrip_blocks and trim_blocks on, `{%-`/`-%}` strip, and the
// transformers-only {% generation %} tags removed.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lora::data::jinja {

enum class TokenType : uint8_t {
  Text,
  Number,
  String,
  Identifier,
  Equals,
  OpenParen,
  CloseParen,
  OpenStatement,
  CloseStatement,
  OpenExpression,
  CloseExpression,
  OpenBracket,
  CloseBracket,
  OpenBrace,
  CloseBrace,
  Comma,
  Dot,
  Colon,
  Pipe,
  Additive,        // + - ~
  Multiplicative,  // * / // %
  Power,           // **
  Comparison,      // < > <= >= == !=
  Unary,           // a sign with no number after it
  Comment,
  End,  // past the last token
};

struct Token {
  TokenType type;
  std::string value;
  uint32_t pos;  // byte offset in the original source
};

// Throws TemplateError (with a position) on a malformed tag, literal or character.
std::vector<Token> tokenize(std::string_view source);

// 1-based line and column of a byte offset.
std::pair<int, int> line_column(std::string_view source, uint32_t pos);

}  // namespace lora::data::jinja
