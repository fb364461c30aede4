#include "data/jinja/jinja_lexer.h"

#include <array>
#include <limits>
#include <stdexcept>

#include "data/jinja/jinja_text.h"
#include "data/jinja/jinja_value.h"

namespace lora::data::jinja {

namespace {

// The source after whitespace preprocessing, with the original offset of every byte so that
// errors can name the line the author wrote.
struct MappedText {
  std::string text;
  std::vector<uint32_t> origin;  // origin[i]: original offset of text[i]; one extra at the end

  void push(char c, uint32_t from) {
    text += c;
    origin.push_back(from);
  }
  void truncate(std::size_t n) {
    text.resize(n);
    origin.resize(n);
  }
};

MappedText identity_map(std::string_view source) {
  MappedText m;
  m.text.assign(source);
  m.origin.resize(source.size());
  for (std::size_t i = 0; i < source.size(); ++i) m.origin[i] = static_cast<uint32_t>(i);
  return m;
}

bool is_space_at(std::string_view s, std::size_t pos, std::size_t& next) {
  if (pos >= s.size()) return false;
  next = pos;
  return is_js_space(next_code_point(s, next));
}

bool is_line_terminator_before(std::string_view s, std::size_t i) {
  if (i == 0) return true;
  const char prev = s[i - 1];
  if (prev == '\n' || prev == '\r') return true;
  // U+2028 and U+2029 end lines for JavaScript's multiline ^ as well.
  return i >= 3 && s.substr(i - 3, 2) == "\xE2\x80" && (s[i - 1] == '\xA8' || s[i - 1] == '\xA9');
}

// lstrip_blocks: spaces and tabs between a line start and "{%", "{#" or "{-" are dropped.
MappedText lstrip_blocks(const MappedText& in) {
  MappedText out;
  const std::string_view s = in.text;
  for (std::size_t i = 0; i < s.size();) {
    if (is_line_terminator_before(s, i)) {
      std::size_t j = i;
      while (j < s.size() && (s[j] == ' ' || s[j] == '\t')) ++j;
      if (j > i && j + 1 < s.size() && s[j] == '{' &&
          (s[j + 1] == '%' || s[j + 1] == '#' || s[j + 1] == '-')) {
        i = j;
      }
    }
    out.push(s[i], in.origin[i]);
    ++i;
  }
  return out;
}

// trim_blocks: the newline right after "%}", "#}" or "-}" is dropped.
MappedText trim_blocks(const MappedText& in) {
  MappedText out;
  const std::string_view s = in.text;
  for (std::size_t i = 0; i < s.size();) {
    if (i + 2 < s.size() && (s[i] == '#' || s[i] == '%' || s[i] == '-') && s[i + 1] == '}' &&
        s[i + 2] == '\n') {
      out.push(s[i], in.origin[i]);
      out.push(s[i + 1], in.origin[i + 1]);
      i += 3;
      continue;
    }
    out.push(s[i], in.origin[i]);
    ++i;
  }
  return out;
}

// Matches "{%-? (end)?generation -?%}" at `i`; returns the end offset or 0.
std::size_t match_generation_tag(std::string_view s, std::size_t i, bool& strip_before,
                                 bool& strip_after) {
  if (s.substr(i, 2) != "{%") return 0;
  std::size_t j = i + 2, next = 0;
  strip_before = j < s.size() && s[j] == '-';
  if (strip_before) ++j;
  while (is_space_at(s, j, next)) j = next;
  if (s.substr(j, 3) == "end") j += 3;
  if (s.substr(j, 10) != "generation") return 0;
  j += 10;
  while (is_space_at(s, j, next)) j = next;
  strip_after = j < s.size() && s[j] == '-';
  if (strip_after) ++j;
  if (s.substr(j, 2) != "%}") return 0;
  return j + 2;
}

// transformers' {% generation %} / {% endgeneration %} markers are not Jinja: remove them,
// with the whitespace around them when they carry a '-'.
MappedText remove_generation_tags(const MappedText& in) {
  MappedText out;
  const std::string_view s = in.text;
  std::size_t whitespace_start = 0;  // where the run of whitespace just emitted began in `out`
  for (std::size_t i = 0; i < s.size();) {
    bool strip_before = false, strip_after = false;
    if (const std::size_t end = match_generation_tag(s, i, strip_before, strip_after)) {
      if (strip_before) out.truncate(whitespace_start);
      i = end;
      std::size_t next = 0;
      while (is_space_at(s, i, next)) {
        for (; i < next; ++i)
          if (!strip_after) out.push(s[i], in.origin[i]);
      }
      whitespace_start = out.text.size();
      continue;
    }
    std::size_t next = 0;
    const bool space = is_space_at(s, i, next);
    if (!space) next = i + 1;
    for (; i < next; ++i) out.push(s[i], in.origin[i]);
    if (!space) whitespace_start = out.text.size();
  }
  return out;
}

MappedText preprocess(std::string_view source) {
  if (!source.empty() && source.back() == '\n') source.remove_suffix(1);
  MappedText m = remove_generation_tags(trim_blocks(lstrip_blocks(identity_map(source))));
  m.origin.push_back(static_cast<uint32_t>(source.size()));
  return m;
}

bool is_word_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

struct Symbol {
  std::string_view text;
  TokenType type;
};
// Longest symbols first where one is a prefix of another.
constexpr std::array<Symbol, 29> kSymbols{{
    {"{%", TokenType::OpenStatement},  {"%}", TokenType::CloseStatement},
    {"{{", TokenType::OpenExpression}, {"}}", TokenType::CloseExpression},
    {"(", TokenType::OpenParen},       {")", TokenType::CloseParen},
    {"{", TokenType::OpenBrace},       {"}", TokenType::CloseBrace},
    {"[", TokenType::OpenBracket},     {"]", TokenType::CloseBracket},
    {",", TokenType::Comma},           {".", TokenType::Dot},
    {":", TokenType::Colon},           {"|", TokenType::Pipe},
    {"<=", TokenType::Comparison},     {">=", TokenType::Comparison},
    {"==", TokenType::Comparison},     {"!=", TokenType::Comparison},
    {"<", TokenType::Comparison},      {">", TokenType::Comparison},
    {"+", TokenType::Additive},        {"-", TokenType::Additive},
    {"~", TokenType::Additive},        {"**", TokenType::Power},
    {"*", TokenType::Multiplicative},  {"//", TokenType::Multiplicative},
    {"/", TokenType::Multiplicative},  {"%", TokenType::Multiplicative},
    {"=", TokenType::Equals},
}};

class Lexer {
 public:
  explicit Lexer(std::string_view source) : m_(preprocess(source)), s_(m_.text) {}

  std::vector<Token> run() {
    while (i_ < s_.size()) step();
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(const std::string& message, std::size_t at) const {
    throw TemplateError(message, m_.origin[std::min(at, s_.size())]);
  }
  void push(TokenType type, std::string value, std::size_t start) {
    tokens_.push_back(Token{type, std::move(value), m_.origin[start]});
  }
  TokenType last_type() const { return tokens_.empty() ? TokenType::End : tokens_.back().type; }
  bool at(std::string_view text) const { return s_.substr(i_, text.size()) == text; }

  void skip_whitespace() {
    std::size_t next = 0;
    while (is_space_at(s_, i_, next)) i_ = next;
  }
  // `{%-` and friends: the text before the tag loses its trailing whitespace.
  void strip_previous_text() {
    if (!tokens_.empty() && tokens_.back().type == TokenType::Text) {
      auto& text = tokens_.back().value;
      text.resize(trim_end(text).size());
      if (text.empty()) tokens_.pop_back();
    }
  }

  void step() {
    const TokenType last = last_type();
    if (last == TokenType::End || last == TokenType::CloseStatement ||
        last == TokenType::CloseExpression || last == TokenType::Comment) {
      const std::size_t start = i_;
      while (i_ < s_.size() && !(s_[i_] == '{' && i_ + 1 < s_.size() &&
                                 (s_[i_ + 1] == '%' || s_[i_ + 1] == '{' || s_[i_ + 1] == '#')))
        ++i_;
      if (i_ > start) {
        push(TokenType::Text, std::string(s_.substr(start, i_ - start)), start);
        return;
      }
    }
    if (at("{#")) return comment();
    if (at("{%-") || at("{{-")) {
      strip_previous_text();
      const bool statement = s_[i_ + 1] == '%';
      push(statement ? TokenType::OpenStatement : TokenType::OpenExpression,
           statement ? "{%" : "{{", i_);
      if (!statement) brace_depth_ = 0;
      i_ += 3;
      return;
    }
    skip_whitespace();
    if (i_ >= s_.size()) fail("unexpected end of template inside a tag", i_);
    if (at("-%}") || at("-}}")) {
      const bool statement = s_[i_ + 1] == '%';
      push(statement ? TokenType::CloseStatement : TokenType::CloseExpression,
           statement ? "%}" : "}}", i_);
      i_ += 3;
      skip_whitespace();
      return;
    }
    const char c = s_[i_];
    if ((c == '-' || c == '+') && sign_starts_operand(c)) return signed_number();
    for (const auto& symbol : kSymbols) {
      if (symbol.type == TokenType::CloseExpression && brace_depth_ > 0) continue;
      if (!at(symbol.text)) continue;
      push(symbol.type, std::string(symbol.text), i_);
      if (symbol.type == TokenType::OpenExpression) brace_depth_ = 0;
      if (symbol.type == TokenType::OpenBrace) ++brace_depth_;
      if (symbol.type == TokenType::CloseBrace) --brace_depth_;
      i_ += symbol.text.size();
      return;
    }
    if (c == '\'' || c == '"') return string_literal(c);
    if (is_digit(c)) return number();
    if (is_word_char(c)) {
      const std::size_t start = i_;
      while (i_ < s_.size() && is_word_char(s_[i_])) ++i_;
      push(TokenType::Identifier, std::string(s_.substr(start, i_ - start)), start);
      return;
    }
    std::size_t next = i_;
    next_code_point(s_, next);
    fail("unexpected character '" + std::string(s_.substr(i_, next - i_)) + "'", i_);
  }

  void comment() {
    const std::size_t start = i_;
    i_ += 2;
    const bool strip_before = i_ < s_.size() && s_[i_] == '-';
    if (strip_before) ++i_;
    const std::size_t close = s_.find("#}", i_);
    if (close == std::string_view::npos) fail("comment is never closed with #}", start);
    const bool strip_after = close > i_ && s_[close - 1] == '-';
    if (strip_before) strip_previous_text();
    push(TokenType::Comment, std::string(s_.substr(i_, close - i_)), start);
    i_ = close + 2;
    if (strip_after) skip_whitespace();
  }

  // After an operand a sign is a binary operator; elsewhere it is a unary sign, folded into a
  // number literal when digits follow.
  bool sign_starts_operand(char c) {
    switch (last_type()) {
      case TokenType::Text:
      case TokenType::End:
        fail(std::string("unexpected character '") + c + "'", i_);
      case TokenType::Identifier:
      case TokenType::Number:
      case TokenType::String:
      case TokenType::CloseParen:
      case TokenType::CloseBracket:
        return false;
      default:
        return true;
    }
  }

  void signed_number() {
    const std::size_t start = i_;
    std::string text(1, s_[i_++]);
    const std::size_t digits = i_;
    while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    if (i_ == digits) {
      push(TokenType::Unary, text, start);
      return;
    }
    if (i_ + 1 < s_.size() && s_[i_] == '.' && is_digit(s_[i_ + 1])) {
      ++i_;
      while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    }
    text.append(s_.substr(digits, i_ - digits));
    push(TokenType::Number, text, start);
  }

  void number() {
    const std::size_t start = i_;
    while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    // After a dot (`messages.0.content`) a number is an index, never a float.
    if (last_type() != TokenType::Dot && i_ + 1 < s_.size() && s_[i_] == '.' &&
        is_digit(s_[i_ + 1])) {
      ++i_;
      while (i_ < s_.size() && is_digit(s_[i_])) ++i_;
    }
    push(TokenType::Number, std::string(s_.substr(start, i_ - start)), start);
  }

  unsigned hex_digits(std::size_t count, std::size_t escape_start) {
    unsigned value = 0;
    for (std::size_t k = 0; k < count; ++k, ++i_) {
      const char h = i_ < s_.size() ? s_[i_] : '\0';
      const int digit = is_digit(h)                              ? h - '0'
                        : (h | 0x20) >= 'a' && (h | 0x20) <= 'f' ? (h | 0x20) - 'a' + 10
                                                                 : -1;
      if (digit < 0) fail("invalid hexadecimal escape in a string literal", escape_start);
      value = value * 16 + static_cast<unsigned>(digit);
    }
    return value;
  }

  void string_literal(char quote) {
    const std::size_t start = i_++;
    std::string value;
    for (;;) {
      if (i_ >= s_.size()) fail("string literal is never closed", start);
      const char c = s_[i_];
      if (c == quote) break;
      if (c != '\\') {
        value += c;
        ++i_;
        continue;
      }
      const std::size_t escape_start = i_++;
      if (i_ >= s_.size()) fail("string literal is never closed", start);
      const char e = s_[i_++];
      switch (e) {
        case 'n':
          value += '\n';
          break;
        case 't':
          value += '\t';
          break;
        case 'r':
          value += '\r';
          break;
        case 'b':
          value += '\b';
          break;
        case 'f':
          value += '\f';
          break;
        case 'v':
          value += '\v';
          break;
        case '\'':
          value += '\'';
          break;
        case '"':
          value += '"';
          break;
        case '\\':
          value += '\\';
          break;
        case 'x':
          append_utf8(value, hex_digits(2, escape_start));
          break;
        case 'u': {
          char32_t unit = hex_digits(4, escape_start);
          if (unit >= 0xD800 && unit <= 0xDBFF && at("\\u")) {  // a UTF-16 surrogate pair
            const std::size_t save = i_;
            i_ += 2;
            const unsigned low = hex_digits(4, escape_start);
            if (low >= 0xDC00 && low <= 0xDFFF) {
              unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
            } else {
              i_ = save;
            }
          }
          if (unit >= 0xD800 && unit <= 0xDFFF) unit = 0xFFFD;  // unpaired surrogate
          append_utf8(value, unit);
          break;
        }
        default:  // unknown escapes stay as written, as in Python string literals
          value += '\\';
          value += e;
      }
    }
    ++i_;  // the closing quote
    push(TokenType::String, std::move(value), start);
  }

  MappedText m_;
  std::string_view s_;
  std::size_t i_ = 0;
  int brace_depth_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  if (source.size() >= std::numeric_limits<uint32_t>::max())
    throw TemplateError("template is too large");
  return Lexer(source).run();
}

std::pair<int, int> line_column(std::string_view source, uint32_t pos) {
  int line = 1, column = 1;
  for (std::size_t i = 0; i < pos && i < source.size(); ++i) {
    if (source[i] == '\n') {
      ++line;
      column = 1;
    } else if ((static_cast<unsigned char>(source[i]) & 0xC0) != 0x80) {
      ++column;
    }
  }
  return {line, column};
}

}  // namespace lora::data::jinja
