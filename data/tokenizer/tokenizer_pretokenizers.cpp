#include "data/tokenizer/tokenizer_pretokenizers.h"

#include <functional>
#include <stdexcept>

#include "data/tokenizer/tokenizer_byte_level.h"
#include "data/tokenizer/tokenizer_json.h"
#include "data/tokenizer/unicode_utf8.h"

namespace lora::data {

namespace {
using nlohmann::json;

// Replaces each piece that is not an added token with the pieces `split` makes of it.
void split_each(std::vector<Piece>& pieces,
                const std::function<void(Piece&, std::vector<NormalizedText>&)>& split) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  std::vector<NormalizedText> parts;
  for (auto& piece : pieces) {
    if (piece.added_id >= 0) {
      out.push_back(std::move(piece));
      continue;
    }
    parts.clear();
    split(piece, parts);
    for (std::size_t i = 0; i < parts.size(); ++i) {
      if (parts[i].empty()) continue;
      out.push_back(
          Piece{std::move(parts[i]), -1, piece.byte_level, piece.at_input_start && i == 0});
    }
  }
  pieces = std::move(out);
}

// The regex GPT-2 splits words with; ByteLevel uses it when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

class ByteLevelPre final : public PreTokenizer {
 public:
  ByteLevelPre(bool add_prefix_space, bool use_regex, bool lazy)
      : add_prefix_space_(add_prefix_space), lazy_(lazy) {
    if (use_regex) regex_ = std::make_unique<Regex>(Regex::pattern(kGpt2Pattern, "ByteLevel"));
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<ByteRange> matches;
    split_each(pieces, [&](Piece& piece, std::vector<NormalizedText>& parts) {
      NormalizedText& text = piece.text;
      if (add_prefix_space_ && text.str()[0] != ' ') {
        NormalizedText with_space = NormalizedText::empty_like(text);
        std::size_t first_len = unicode::utf8_length(static_cast<unsigned char>(text.str()[0]));
        with_space.append_new(" ", text.origin(0, first_len));
        with_space.append_from(text, 0, text.size());
        text = std::move(with_space);
      }
      if (regex_) {
        matches.clear();
        regex_->find_all(text.str(), matches);
        split_by(text, cover_matches(matches, text.size()), SplitBehavior::Isolated, parts);
      } else {
        parts.push_back(std::move(text));
      }
    });
    for (auto& piece : pieces) {
      if (piece.added_id >= 0 || piece.byte_level) continue;
      if (lazy_) {
        piece.byte_level = true;
        continue;
      }
      const auto& t = byte_level::table();
      NormalizedText mapped = NormalizedText::empty_like(piece.text);
      const std::string& s = piece.text.str();
      for (std::size_t i = 0; i < s.size(); ++i)
        mapped.append_new(t.byte_to_utf8[static_cast<unsigned char>(s[i])],
                          piece.text.origin(i, i + 1));
      piece.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_, lazy_;
  std::unique_ptr<Regex> regex_;
};

class SplitPre final : public PreTokenizer {
 public:
  SplitPre(Regex pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<ByteRange> matches;
    split_each(pieces, [&](Piece& piece, std::vector<NormalizedText>& parts) {
      matches.clear();
      pattern_.find_all(piece.text.str(), matches);
      auto splits = cover_matches(matches, piece.text.size());
      if (invert_)
        for (auto& s : splits) s.matched = !s.matched;
      split_by(piece.text, std::move(splits), behavior_, parts);
    });
  }

 private:
  Regex pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// Splits on characters that satisfy a predicate (Digits, Punctuation, WhitespaceSplit, ...).
class CharClassPre final : public PreTokenizer {
 public:
  CharClassPre(std::function<bool(char32_t)> pred, SplitBehavior behavior)
      : pred_(std::move(pred)), behavior_(behavior) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& piece, std::vector<NormalizedText>& parts) {
      split_by(piece.text, cover_char_matches(piece.text.str(), pred_), behavior_, parts);
    });
  }

 private:
  std::function<bool(char32_t)> pred_;
  SplitBehavior behavior_;
};

// Whitespace: keeps the matches of `\w+|[^\w\s]+` and drops everything else.
class WhitespacePre final : public PreTokenizer {
 public:
  WhitespacePre() : regex_(Regex::pattern(R"(\w+|[^\w\s]+)", "Whitespace")) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<ByteRange> matches;
    split_each(pieces, [&](Piece& piece, std::vector<NormalizedText>& parts) {
      matches.clear();
      regex_.find_all(piece.text.str(), matches);
      auto splits = cover_matches(matches, piece.text.size());
      for (auto& s : splits) s.matched = !s.matched;
      split_by(piece.text, std::move(splits), SplitBehavior::Removed, parts);
    });
  }

 private:
  Regex regex_;
};

enum class PrependScheme { Always, Never, First };

class MetaspacePre final : public PreTokenizer {
 public:
  MetaspacePre(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_each(pieces, [&](Piece& piece, std::vector<NormalizedText>& parts) {
      const NormalizedText& text = piece.text;
      const std::string& s = text.str();
      NormalizedText out = NormalizedText::empty_like(text);
      out.reserve(s.size() + 8);
      bool prepend = false;
      if (scheme_ == PrependScheme::Always)
        prepend = s.compare(0, replacement_.size(), replacement_) != 0 && s[0] != ' ';
      else if (scheme_ == PrependScheme::First)
        prepend = s.compare(0, replacement_.size(), replacement_) != 0 && s[0] != ' ' &&
                  piece.at_input_start;
      if (prepend) {
        std::size_t first_len = unicode::utf8_length(static_cast<unsigned char>(s[0]));
        out.append_new(replacement_, text.origin(0, first_len));
      }
      std::size_t last = 0;
      for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != ' ') continue;
        out.append_from(text, last, i);
        out.append_new(replacement_, text.origin(i, i + 1));
        last = i + 1;
      }
      out.append_from(text, last, s.size());
      if (!split_) {
        parts.push_back(std::move(out));
        return;
      }
      std::vector<ByteRange> matches;
      std::size_t pos = 0;
      const std::string& o = out.str();
      while ((pos = o.find(replacement_, pos)) != std::string::npos) {
        matches.emplace_back(pos, pos + replacement_.size());
        pos += replacement_.size();
      }
      split_by(out, cover_matches(matches, out.size()), SplitBehavior::MergedWithNext, parts);
    });
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

class SequencePre final : public PreTokenizer {
 public:
  explicit SequencePre(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

std::unique_ptr<PreTokenizer> make(const json& j, const std::string& where, bool is_last) {
  if (j.is_null()) return nullptr;
  std::string type = json_field::type_of(j, where);
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPre>(json_field::get_bool(j, "add_prefix_space", true, where),
                                          json_field::get_bool(j, "use_regex", true, where),
                                          is_last);
  }
  if (type == "Split") {
    bool is_regex = false;
    std::string pattern = json_field::pattern(j, where, is_regex);
    auto behavior = parse_split_behavior(json_field::require_string(j, "behavior", where), where);
    return std::make_unique<SplitPre>(
        is_regex ? Regex::pattern(pattern, where + ".pattern") : Regex::literal(pattern), behavior,
        json_field::get_bool(j, "invert", false, where));
  }
  if (type == "Digits") {
    bool individual = json_field::get_bool(j, "individual_digits", false, where);
    return std::make_unique<CharClassPre>(
        unicode::is_numeric, individual ? SplitBehavior::Isolated : SplitBehavior::Contiguous);
  }
  if (type == "Punctuation") {
    auto behavior =
        parse_split_behavior(json_field::get_string(j, "behavior", "Isolated", where), where);
    return std::make_unique<CharClassPre>(unicode::is_punctuation, behavior);
  }
  if (type == "WhitespaceSplit")
    return std::make_unique<CharClassPre>(unicode::is_whitespace, SplitBehavior::Removed);
  if (type == "Whitespace") return std::make_unique<WhitespacePre>();
  if (type == "CharDelimiterSplit") {
    char32_t delim = json_field::single_char(json_field::require_string(j, "delimiter", where),
                                             where, "delimiter");
    return std::make_unique<CharClassPre>([delim](char32_t c) { return c == delim; },
                                          SplitBehavior::Removed);
  }
  if (type == "BertPreTokenizer") {
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    parts.push_back(std::make_unique<CharClassPre>(unicode::is_whitespace, SplitBehavior::Removed));
    parts.push_back(
        std::make_unique<CharClassPre>(unicode::is_punctuation, SplitBehavior::Isolated));
    return std::make_unique<SequencePre>(std::move(parts));
  }
  if (type == "Metaspace") {
    std::string replacement = json_field::get_string(j, "replacement", "\xE2\x96\x81", where);
    json_field::single_char(replacement, where, "replacement");
    PrependScheme scheme = PrependScheme::Always;
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      std::string s = json_field::require_string(j, "prepend_scheme", where);
      if (s == "always")
        scheme = PrependScheme::Always;
      else if (s == "never")
        scheme = PrependScheme::Never;
      else if (s == "first")
        scheme = PrependScheme::First;
      else
        throw std::runtime_error(where + ": unknown prepend_scheme \"" + s + "\"");
    } else if (!json_field::get_bool(j, "add_prefix_space", true, where)) {
      scheme = PrependScheme::Never;
    }
    return std::make_unique<MetaspacePre>(std::move(replacement), scheme,
                                          json_field::get_bool(j, "split", true, where));
  }
  if (type == "Sequence") {
    auto parts = json_field::component_list<PreTokenizer>(
        j, "pretokenizers", where, [is_last](const json& item, const std::string& here, bool last) {
          return make(item, here, is_last && last);
        });
    return std::make_unique<SequencePre>(std::move(parts));
  }
  throw std::runtime_error(where + ": unsupported pre_tokenizer type \"" + type + "\"");
}
}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json& j, const std::string& where) {
  return make(j, where, true);
}

}  // namespace lora::data
