#define PCRE2_CODE_UNIT_WIDTH 8
#include "data/tokenizer/tokenizer_regex.h"

#include <pcre2.h>

#include <stdexcept>

#include "data/tokenizer/unicode_utf8.h"

namespace lora::data {

namespace {
// Oniguruma's \s is the Unicode White_Space property; PCRE2's also takes U+180E. Its \w is
// letters, marks, decimal digits and connector punctuation; PCRE2's lacks the marks.
constexpr std::string_view kSpaceItems =
    "\\t\\n\\x0B\\f\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}"
    "\\x{205F}\\x{3000}";
constexpr std::string_view kWordItems = "\\p{L}\\p{M}\\p{Nd}\\p{Pc}";

struct CodeDeleter {
  void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct MatchDataDeleter {
  void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};
struct JitStackDeleter {
  void operator()(pcre2_jit_stack* s) const { pcre2_jit_stack_free(s); }
};
struct MatchContextDeleter {
  void operator()(pcre2_match_context* c) const { pcre2_match_context_free(c); }
};
}  // namespace

std::string translate_onig_pattern(std::string_view p) {
  std::string out;
  out.reserve(p.size() + 64);
  int class_depth = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      char n = p[i + 1];
      ++i;
      bool in_class = class_depth > 0;
      if (n == 's' || n == 'w') {
        std::string_view items = n == 's' ? kSpaceItems : kWordItems;
        if (in_class) {
          out += items;
        } else {
          out += '[';
          out += items;
          out += ']';
        }
      } else if ((n == 'S' || n == 'W') && !in_class) {
        out += "[^";
        out += n == 'S' ? kSpaceItems : kWordItems;
        out += ']';
      } else {
        out += '\\';
        out += n;
      }
      continue;
    }
    if (c == '[') {
      ++class_depth;
      out += c;
      // A ']' right after '[' or '[^' is a literal member, not the end of the class.
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      if (i + 1 < p.size() && p[i + 1] == ']') out += p[++i];
      continue;
    }
    if (c == ']' && class_depth > 0) --class_depth;
    out += c;
  }
  return out;
}

struct Regex::Impl {
  std::string source;
  bool is_literal = false;
  std::unique_ptr<pcre2_code, CodeDeleter> code;

  void find_literal(std::string_view text, std::vector<ByteRange>& out) const {
    if (source.empty()) return;
    std::size_t pos = 0;
    while ((pos = text.find(source, pos)) != std::string_view::npos) {
      out.emplace_back(pos, pos + source.size());
      pos += source.size();
    }
  }

  // Returns false when the JIT stack ran out (the caller retries with a larger one).
  bool find_pcre(std::string_view text, std::vector<ByteRange>& out,
                 pcre2_match_context* context) const {
    std::unique_ptr<pcre2_match_data, MatchDataDeleter> md(
        pcre2_match_data_create_from_pattern(code.get(), nullptr));
    if (!md) throw std::bad_alloc();
    auto subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    std::size_t start = 0;
    std::size_t first_out = out.size();
    while (start <= text.size()) {
      int rc = pcre2_match(code.get(), subject, text.size(), start, PCRE2_NO_UTF_CHECK, md.get(),
                           context);
      if (rc == PCRE2_ERROR_NOMATCH) break;
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        out.resize(first_out);
        return false;
      }
      if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof msg);
        throw std::runtime_error("regex /" + source +
                                 "/ failed: " + reinterpret_cast<const char*>(msg));
      }
      PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.get());
      std::size_t b = ov[0], e = ov[1];
      out.emplace_back(b, e);
      if (e > b) {
        start = e;
      } else {  // empty match: step over one character
        if (e >= text.size()) break;
        start = e + unicode::utf8_length(static_cast<unsigned char>(text[e]));
      }
    }
    return true;
  }
};

Regex::Regex() : impl_(std::make_unique<Impl>()) {}
Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

Regex Regex::literal(std::string text) {
  Regex r;
  r.impl_->source = std::move(text);
  r.impl_->is_literal = true;
  return r;
}

Regex Regex::pattern(const std::string& onig_pattern, const std::string& where) {
  Regex r;
  r.impl_->source = onig_pattern;
  unicode::require_valid_utf8(onig_pattern, where);
  std::string translated = translate_onig_pattern(onig_pattern);
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP, &error, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(error, msg, sizeof msg);
    throw std::runtime_error(where + ": invalid regex /" + onig_pattern +
                             "/: " + reinterpret_cast<const char*>(msg));
  }
  r.impl_->code.reset(code);
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);  // falls back to the interpreter when it fails
  return r;
}

void Regex::find_all(std::string_view text, std::vector<ByteRange>& out) const {
  if (impl_->is_literal) {
    impl_->find_literal(text, out);
    return;
  }
  if (impl_->find_pcre(text, out, nullptr)) return;
  // Long runs (e.g. megabytes of spaces) can exhaust the default 32 KiB JIT stack.
  std::unique_ptr<pcre2_match_context, MatchContextDeleter> context(
      pcre2_match_context_create(nullptr));
  std::unique_ptr<pcre2_jit_stack, JitStackDeleter> stack(
      pcre2_jit_stack_create(64 * 1024, 256 * 1024 * 1024, nullptr));
  if (!context || !stack) throw std::bad_alloc();
  pcre2_jit_stack_assign(context.get(), nullptr, stack.get());
  if (!impl_->find_pcre(text, out, context.get()))
    throw std::runtime_error("regex /" + impl_->source + "/: input too long for the matcher");
}

std::string Regex::replace_all(std::string_view text, std::string_view content) const {
  std::vector<ByteRange> matches;
  find_all(text, matches);
  if (matches.empty()) return std::string(text);
  std::string out;
  out.reserve(text.size());
  std::size_t last = 0;
  for (auto [b, e] : matches) {
    out.append(text.substr(last, b - last));
    out.append(content);
    last = e;
  }
  out.append(text.substr(last));
  return out;
}

}  // namespace lora::data
