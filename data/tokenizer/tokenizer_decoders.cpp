#include "data/tokenizer/tokenizer_decoders.h"

#include <stdexcept>

#include "data/tokenizer/tokenizer_byte_level.h"
#include "data/tokenizer/tokenizer_json.h"
#include "data/tokenizer/tokenizer_regex.h"
#include "data/tokenizer/unicode_utf8.h"

namespace lora::data {

namespace {
using nlohmann::json;

// Every token's characters back to bytes; a token with a character outside the table is kept
// as its own bytes. The whole result is one string, invalid UTF-8 replaced by U+FFFD.
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    std::string token_bytes;
    for (const auto& t : tokens) {
      token_bytes.clear();
      bool all_mapped = true;
      std::size_t pos = 0;
      while (pos < t.size()) {
        int b = byte_level::byte_of(unicode::next_code_point(t, pos));
        if (b < 0) {
          all_mapped = false;
          break;
        }
        token_bytes.push_back(static_cast<char>(b));
      }
      bytes += all_mapped ? token_bytes : t;
    }
    tokens.assign(1, unicode::utf8_lossy(bytes));
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool drop_first)
      : replacement_(std::move(replacement)), drop_first_(drop_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::size_t i = 0; i < tokens.size(); ++i) {
      std::string out;
      const std::string& t = tokens[i];
      std::size_t pos = 0;
      while (pos < t.size()) {
        if (t.compare(pos, replacement_.size(), replacement_) == 0) {
          if (!(i == 0 && drop_first_)) out += ' ';
          pos += replacement_.size();
        } else {
          out += t[pos++];
        }
      }
      tokens[i] = std::move(out);
    }
  }

 private:
  std::string replacement_;
  bool drop_first_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Regex pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = pattern_.replace_all(t, content_);
  }

 private:
  Regex pattern_;
  std::string content_;
};

// "<0x41>"-style tokens become their bytes: a run of them that forms valid UTF-8 becomes that
// text, otherwise one U+FFFD per byte.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    auto flush = [&] {
      if (run.empty()) return;
      if (unicode::find_invalid_utf8(run) == std::string::npos) {
        out.push_back(run);
      } else {
        for (std::size_t i = 0; i < run.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      run.clear();
    };
    for (auto& t : tokens) {
      int byte = parse_byte(t);
      if (byte >= 0) {
        run.push_back(static_cast<char>(byte));
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  static int parse_byte(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int hi = hex(t[3]), lo = hex(t[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(char32_t content, std::size_t start, std::size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<std::pair<std::size_t, char32_t>> chars;  // byte offset, code point
      std::size_t pos = 0;
      while (pos < t.size()) {
        std::size_t begin = pos;
        chars.push_back({begin, unicode::next_code_point(t, pos)});
      }
      std::size_t start_cut = 0;
      for (std::size_t i = 0; i < std::min(start_, chars.size()); ++i) {
        if (chars[i].second != content_) break;
        start_cut = i + 1;
      }
      std::size_t stop_cut = chars.size();
      for (std::size_t i = 0; i < std::min(stop_, chars.size()); ++i) {
        std::size_t index = chars.size() - i - 1;
        if (chars[index].second != content_) break;
        stop_cut = index;
      }
      if (stop_cut <= start_cut) {
        t.clear();
        continue;
      }
      std::size_t b = start_cut < chars.size() ? chars[start_cut].first : t.size();
      std::size_t e = stop_cut < chars.size() ? chars[stop_cut].first : t.size();
      t = t.substr(b, e - b);
    }
  }

 private:
  char32_t content_;
  std::size_t start_, stop_;
};

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  std::string type = json_field::type_of(j, where);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Metaspace") {
    std::string replacement = json_field::get_string(j, "replacement", "\xE2\x96\x81", where);
    json_field::single_char(replacement, where, "replacement");
    bool drop_first = true;
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      std::string scheme = json_field::require_string(j, "prepend_scheme", where);
      if (scheme != "always" && scheme != "never" && scheme != "first")
        throw std::runtime_error(where + ": unknown prepend_scheme \"" + scheme + "\"");
      drop_first = scheme != "never";
    } else {
      drop_first = json_field::get_bool(j, "add_prefix_space", true, where);
    }
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), drop_first);
  }
  if (type == "Replace") {
    bool is_regex = false;
    std::string pattern = json_field::pattern(j, where, is_regex);
    return std::make_unique<ReplaceDecoder>(
        is_regex ? Regex::pattern(pattern, where + ".pattern") : Regex::literal(pattern),
        json_field::require_string(j, "content", where));
  }
  if (type == "Strip") {
    char32_t content =
        json_field::single_char(json_field::require_string(j, "content", where), where, "content");
    int64_t start = json_field::get_int(j, "start", 0, where);
    int64_t stop = json_field::get_int(j, "stop", 0, where);
    if (start < 0 || stop < 0)
      throw std::runtime_error(where + ": \"start\" and \"stop\" must not be negative");
    return std::make_unique<StripDecoder>(content, static_cast<std::size_t>(start),
                                          static_cast<std::size_t>(stop));
  }
  if (type == "Sequence") {
    auto parts = json_field::component_list<Decoder>(
        j, "decoders", where,
        [](const json& item, const std::string& here, bool) { return make_decoder(item, here); });
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  throw std::runtime_error(where + ": unsupported decoder type \"" + type + "\"");
}

}  // namespace lora::data
