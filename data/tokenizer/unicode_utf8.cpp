#include "data/tokenizer/unicode_utf8.h"

#include <unicode/uchar.h>
#include <unicode/ustring.h>

#include <stdexcept>

namespace lora::data::unicode {

char32_t next_code_point(std::string_view s, std::size_t& pos) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char lead = byte(pos);
  std::size_t len = utf8_length(lead);
  if (pos + len > s.size()) len = 1;
  char32_t cp;
  switch (len) {
    case 1:
      cp = lead;
      break;
    case 2:
      cp = ((lead & 0x1Fu) << 6) | (byte(pos + 1) & 0x3Fu);
      break;
    case 3:
      cp = ((lead & 0x0Fu) << 12) | ((byte(pos + 1) & 0x3Fu) << 6) | (byte(pos + 2) & 0x3Fu);
      break;
    default:
      cp = ((lead & 0x07u) << 18) | ((byte(pos + 1) & 0x3Fu) << 12) |
           ((byte(pos + 2) & 0x3Fu) << 6) | (byte(pos + 3) & 0x3Fu);
  }
  pos += len;
  return cp;
}

char32_t previous_code_point(std::string_view s, std::size_t end, std::size_t& start) {
  start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80 && end - start < 4)
    --start;
  std::size_t pos = start;
  return next_code_point(s, pos);
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {
// Length of the valid UTF-8 sequence at `pos`, or 0 when it is invalid.
std::size_t valid_sequence_length(std::string_view s, std::size_t pos) {
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  unsigned char b0 = byte(pos);
  if (b0 < 0x80) return 1;
  std::size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlongs
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (pos + len > s.size()) return 0;
  if (byte(pos + 1) < lo || byte(pos + 1) > hi) return 0;
  for (std::size_t i = 2; i < len; ++i)
    if ((byte(pos + i) & 0xC0) != 0x80) return 0;
  return len;
}
}  // namespace

std::size_t find_invalid_utf8(std::string_view s) {
  std::size_t pos = 0;
  while (pos < s.size()) {
    if (static_cast<unsigned char>(s[pos]) < 0x80) {
      ++pos;
      continue;
    }
    std::size_t len = valid_sequence_length(s, pos);
    if (len == 0) return pos;
    pos += len;
  }
  return std::string_view::npos;
}

void require_valid_utf8(std::string_view s, std::string_view what) {
  std::size_t bad = find_invalid_utf8(s);
  if (bad != std::string_view::npos)
    throw std::runtime_error(std::string(what) + ": invalid UTF-8 at byte " + std::to_string(bad));
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    std::size_t len = valid_sequence_length(bytes, pos);
    if (len > 0) {
      out.append(bytes.substr(pos, len));
      pos += len;
      continue;
    }
    // Like from_utf8_lossy: one U+FFFD for the longest prefix of a valid sequence (at least one
    // byte), following the WHATWG "maximal subpart" rule.
    std::size_t skip = 1;
    unsigned char b0 = static_cast<unsigned char>(bytes[pos]);
    std::size_t want = utf8_length(b0);
    if (want > 1 && b0 >= 0xC2 && b0 <= 0xF4) {
      unsigned char lo = 0x80, hi = 0xBF;
      if (b0 == 0xE0) lo = 0xA0;
      if (b0 == 0xED) hi = 0x9F;
      if (b0 == 0xF0) lo = 0x90;
      if (b0 == 0xF4) hi = 0x8F;
      if (pos + 1 < bytes.size()) {
        unsigned char b1 = static_cast<unsigned char>(bytes[pos + 1]);
        if (b1 >= lo && b1 <= hi) {
          skip = 2;
          while (skip < want && pos + skip < bytes.size() &&
                 (static_cast<unsigned char>(bytes[pos + skip]) & 0xC0) == 0x80)
            ++skip;
        }
      }
    }
    out.append("\xEF\xBF\xBD");
    pos += skip;
  }
  return out;
}

bool is_ascii(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  return true;
}

bool is_whitespace(char32_t c) {
  if (c < 0x80) return c == ' ' || (c >= 0x09 && c <= 0x0D);
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

bool is_numeric(char32_t c) {
  if (c < 0x80) return c >= '0' && c <= '9';
  auto t = u_charType(static_cast<UChar32>(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

bool is_punctuation(char32_t c) {
  if (c < 0x80)
    return (c >= 0x21 && c <= 0x2F) || (c >= 0x3A && c <= 0x40) || (c >= 0x5B && c <= 0x60) ||
           (c >= 0x7B && c <= 0x7E);
  return u_ispunct(static_cast<UChar32>(c));
}

bool is_word_char(char32_t c) {
  if (c < 0x80)
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  auto uc = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(uc, UCHAR_ALPHABETIC) || u_hasBinaryProperty(uc, UCHAR_JOIN_CONTROL))
    return true;
  auto mask = U_GET_GC_MASK(uc);
  return (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) != 0;
}

bool is_nonspacing_mark(char32_t c) {
  return c >= 0x80 && u_charType(static_cast<UChar32>(c)) == U_NON_SPACING_MARK;
}

void append_lowercase(std::string& out, char32_t c) {
  if (c < 0x80) {
    out.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    return;
  }
  // Full (not simple) mapping of the single code point, without context, as Rust does per char.
  UChar src[2];
  int32_t src_len = 0;
  U16_APPEND_UNSAFE(src, src_len, static_cast<UChar32>(c));
  UChar dst[8];
  UErrorCode status = U_ZERO_ERROR;
  int32_t n = u_strToLower(dst, 8, src, src_len, "", &status);
  if (U_FAILURE(status) || n > 8) {
    append_utf8(out, c);
    return;
  }
  for (int32_t i = 0; i < n;) {
    UChar32 cp;
    U16_NEXT_UNSAFE(dst, i, cp);
    append_utf8(out, static_cast<char32_t>(cp));
  }
}

}  // namespace lora::data::unicode
