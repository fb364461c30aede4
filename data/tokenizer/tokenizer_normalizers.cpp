#include "data/tokenizer/tokenizer_normalizers.h"

#include <stdexcept>
#include <vector>

#include "data/tokenizer/tokenizer_json.h"
#include "data/tokenizer/unicode_normalize.h"
#include "data/tokenizer/unicode_utf8.h"

namespace lora::data {

namespace {
using nlohmann::json;

class UnicodeNormalizer final : public Normalizer {
 public:
  explicit UnicodeNormalizer(unicode::NormalForm form) : form_(form) {}
  void normalize(NormalizedText& text) const override {
    const std::string& s = text.str();
    if (unicode::is_ascii(s) || unicode::is_normalized(s, form_)) return;
    if (!text.tracking()) {
      text = NormalizedText(unicode::normalize(s, form_), 0, false);
      return;
    }
    // Normalize segment by segment (between normalization boundaries) so each output byte
    // knows which input characters it came from.
    NormalizedText out = NormalizedText::empty_like(text);
    out.reserve(s.size() + s.size() / 4);
    std::size_t seg_start = 0, pos = 0;
    auto flush = [&](std::size_t end) {
      if (end == seg_start) return;
      std::string_view seg(s.data() + seg_start, end - seg_start);
      std::string norm = unicode::normalize(seg, form_);
      if (norm == seg)
        out.append_from(text, seg_start, end);
      else
        out.append_new(norm, text.origin(seg_start, end));
      seg_start = end;
    };
    while (pos < s.size()) {
      std::size_t begin = pos;
      char32_t c = unicode::next_code_point(s, pos);
      if (begin > seg_start && unicode::has_boundary_before(c, form_)) flush(begin);
    }
    flush(s.size());
    text = std::move(out);
  }

 private:
  unicode::NormalForm form_;
};

class Lowercase final : public Normalizer {
 public:
  void normalize(NormalizedText& text) const override {
    const std::string& s = text.str();
    NormalizedText out = NormalizedText::empty_like(text);
    out.reserve(s.size());
    std::string buf;
    std::size_t pos = 0;
    while (pos < s.size()) {
      std::size_t begin = pos;
      char32_t c = unicode::next_code_point(s, pos);
      buf.clear();
      unicode::append_lowercase(buf, c);
      if (buf.size() == pos - begin && s.compare(begin, pos - begin, buf) == 0)
        out.append_from(text, begin, pos);
      else
        out.append_new(buf, text.origin(begin, pos));
    }
    text = std::move(out);
  }
};

class Prepend final : public Normalizer {
 public:
  explicit Prepend(std::string prefix) : prefix_(std::move(prefix)) {}
  void normalize(NormalizedText& text) const override {
    if (text.empty()) return;
    // The prefix belongs to the first character, as in HF.
    std::size_t first_len = unicode::utf8_length(static_cast<unsigned char>(text.str()[0]));
    NormalizedText out = NormalizedText::empty_like(text);
    out.reserve(prefix_.size() + text.size());
    out.append_new(prefix_, text.origin(0, first_len));
    out.append_from(text, 0, text.size());
    text = std::move(out);
  }

 private:
  std::string prefix_;
};

class Replace final : public Normalizer {
 public:
  Replace(Regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(NormalizedText& text) const override {
    std::vector<ByteRange> matches;
    pattern_.find_all(text.str(), matches);
    if (matches.empty()) return;
    NormalizedText out = NormalizedText::empty_like(text);
    out.reserve(text.size());
    std::size_t last = 0;
    for (auto [b, e] : matches) {
      out.append_from(text, last, b);
      out.append_new(content_, text.origin(b, e));
      last = e;
    }
    out.append_from(text, last, text.size());
    text = std::move(out);
  }

 private:
  Regex pattern_;
  std::string content_;
};

class Strip final : public Normalizer {
 public:
  Strip(bool left, bool right) : left_(left), right_(right) {}
  void normalize(NormalizedText& text) const override {
    const std::string& s = text.str();
    std::size_t begin = 0, end = s.size();
    if (left_) {
      while (begin < end) {
        std::size_t next = begin;
        if (!unicode::is_whitespace(unicode::next_code_point(s, next))) break;
        begin = next;
      }
    }
    if (right_) {
      while (end > begin) {
        std::size_t start;
        if (!unicode::is_whitespace(unicode::previous_code_point(s, end, start))) break;
        end = start;
      }
    }
    if (begin != 0 || end != s.size()) text = text.slice(begin, end);
  }

 private:
  bool left_, right_;
};

class StripAccents final : public Normalizer {
 public:
  void normalize(NormalizedText& text) const override {
    const std::string& s = text.str();
    if (unicode::is_ascii(s)) return;
    NormalizedText out = NormalizedText::empty_like(text);
    std::size_t pos = 0;
    while (pos < s.size()) {
      std::size_t begin = pos;
      if (!unicode::is_nonspacing_mark(unicode::next_code_point(s, pos)))
        out.append_from(text, begin, pos);
    }
    text = std::move(out);
  }
};

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(NormalizedText& text) const override {
    for (const auto& p : parts_) p->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};
}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  std::string type = json_field::type_of(j, where);
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(unicode::NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(unicode::NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(unicode::NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(unicode::NormalForm::NFKD);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Prepend") {
    std::string prefix = json_field::require_string(j, "prepend", where);
    unicode::require_valid_utf8(prefix, where + ".prepend");
    return std::make_unique<Prepend>(std::move(prefix));
  }
  if (type == "Replace") {
    bool is_regex = false;
    std::string pattern = json_field::pattern(j, where, is_regex);
    std::string content = json_field::require_string(j, "content", where);
    unicode::require_valid_utf8(content, where + ".content");
    return std::make_unique<Replace>(
        is_regex ? Regex::pattern(pattern, where + ".pattern") : Regex::literal(pattern),
        std::move(content));
  }
  if (type == "Strip") {
    return std::make_unique<Strip>(json_field::get_bool(j, "strip_left", true, where),
                                   json_field::get_bool(j, "strip_right", true, where));
  }
  if (type == "Sequence") {
    auto parts = json_field::component_list<Normalizer>(
        j, "normalizers", where, [](const json& item, const std::string& here, bool) {
          return make_normalizer(item, here);
        });
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  throw std::runtime_error(where + ": unsupported normalizer type \"" + type + "\"");
}

}  // namespace lora::data
