// The regular expressions of tokenizer.json (written for Oniguruma, as HF `tokenizers` runs them),
// run through PCRE2 in UTF + UCP mode with its JIT. A literal pattern is searched as plain bytes.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace lora::data {

using ByteRange = std::pair<std::size_t, std::size_t>;  // [first, second) bytes

class Regex {
 public:
  // An Oniguruma-syntax pattern. `where` names it in errors (e.g. "pre_tokenizer.pattern").
  static Regex pattern(const std::string& onig_pattern, const std::string& where);
  // Matches the exact string `text`.
  static Regex literal(std::string text);

  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // Every non-overlapping match, left to right, in valid UTF-8 `text`.
  void find_all(std::string_view text, std::vector<ByteRange>& out) const;
  std::vector<ByteRange> find_all(std::string_view text) const {
    std::vector<ByteRange> out;
    find_all(text, out);
    return out;
  }
  // `text` with every match replaced by `content`.
  std::string replace_all(std::string_view text, std::string_view content) const;

 private:
  Regex();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Rewrites the Oniguruma classes whose meaning differs in PCRE2 (`\s`, `\S`, `\w`, `\W`) into
// explicit Unicode classes, so both engines agree. Exposed for tests.
std::string translate_onig_pattern(std::string_view pattern);

}  // namespace lora::data
