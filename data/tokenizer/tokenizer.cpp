#include "data/tokenizer/tokenizer.h"

#include <stdexcept>
#include <unordered_map>
#include <unordered_set>

#include "data/tokenizer/tokenizer_added_tokens.h"
#include "data/tokenizer/tokenizer_bpe.h"
#include "data/tokenizer/tokenizer_decoders.h"
#include "data/tokenizer/tokenizer_file.h"
#include "data/tokenizer/tokenizer_json.h"
#include "data/tokenizer/tokenizer_normalizers.h"
#include "data/tokenizer/tokenizer_postprocessors.h"
#include "data/tokenizer/tokenizer_pretokenizers.h"
#include "data/tokenizer/unicode_utf8.h"

namespace lora::data {

using nlohmann::json;

struct Tokenizer::Impl {
  std::string source;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::optional<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;

  std::vector<AddedToken> added;  // in file order
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, std::size_t> added_by_id;  // id -> index into `added`
  std::unordered_set<std::string> special_contents;
  AddedTokenMatcher raw_matcher;         // tokens matched in the raw input (normalized: false)
  AddedTokenMatcher normalized_matcher;  // tokens matched after normalization

  void load_added_tokens(const json& list);
  Encoding run(std::string_view text, bool add_special_tokens, bool with_offsets) const;
  void add_segment(std::string_view input, ByteRange range, bool track,
                   std::vector<Piece>& pieces) const;
};

void Tokenizer::Impl::load_added_tokens(const json& list) {
  std::string where = source + ": added_tokens";
  if (list.is_null()) return;
  if (!list.is_array()) throw std::runtime_error(where + ": expected a list");
  for (std::size_t i = 0; i < list.size(); ++i) {
    std::string here = where + "[" + std::to_string(i) + "]";
    const json& t = json_field::require_object(list[i], here);
    AddedToken token;
    token.content = json_field::require_string(t, "content", here);
    unicode::require_valid_utf8(token.content, here + ".content");
    int64_t id = json_field::get_int(t, "id", -1, here);
    if (id < 0 || id > INT32_MAX)
      throw std::runtime_error(here + ": \"id\" must be a non-negative integer");
    token.special = json_field::get_bool(t, "special", false, here);
    token.single_word = json_field::get_bool(t, "single_word", false, here);
    token.lstrip = json_field::get_bool(t, "lstrip", false, here);
    token.rstrip = json_field::get_bool(t, "rstrip", false, here);
    token.normalized = json_field::get_bool(t, "normalized", !token.special, here);
    if (token.content.empty()) continue;  // HF ignores empty added tokens
    // A token already in the model's vocab keeps the model's id, as HF does.
    token.id = model->token_to_id(token.content).value_or(static_cast<int32_t>(id));
    if (added_by_content.count(token.content)) continue;
    added_by_content[token.content] = token.id;
    added_by_id[token.id] = added.size();
    if (token.special) special_contents.insert(token.content);
    added.push_back(std::move(token));
  }
  // Special tokens first, then the others, each in file order (the order HF matches them in).
  std::vector<std::string> raw_patterns, norm_patterns;
  std::vector<AddedToken> raw_tokens, norm_tokens;
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& token : added) {
      if (token.special != (pass == 0)) continue;
      if (token.normalized) {
        NormalizedText text(token.content, 0, false);
        if (normalizer) normalizer->normalize(text);
        norm_patterns.push_back(text.str());
        norm_tokens.push_back(token);
      } else {
        raw_patterns.push_back(token.content);
        raw_tokens.push_back(token);
      }
    }
  }
  raw_matcher = AddedTokenMatcher(std::move(raw_patterns), std::move(raw_tokens));
  normalized_matcher = AddedTokenMatcher(std::move(norm_patterns), std::move(norm_tokens));
}

// Normalizes one stretch of input between raw added tokens, and finds the normalized added
// tokens in it.
void Tokenizer::Impl::add_segment(std::string_view input, ByteRange range, bool track,
                                  std::vector<Piece>& pieces) const {
  NormalizedText text(input.substr(range.first, range.second - range.first), range.first, track);
  if (normalizer) normalizer->normalize(text);
  if (text.empty()) return;
  bool at_start = range.first == 0;
  if (normalized_matcher.empty()) {
    pieces.push_back(Piece{std::move(text), -1, false, at_start});
    return;
  }
  for (const auto& split : normalized_matcher.split(text.str())) {
    if (split.range.second == split.range.first) continue;
    pieces.push_back(Piece{text.slice(split.range.first, split.range.second), split.id, false,
                           at_start && split.range.first == 0});
  }
}

Encoding Tokenizer::Impl::run(std::string_view text, bool add_special_tokens,
                              bool with_offsets) const {
  unicode::require_valid_utf8(text, "text to tokenize");
  if (text.size() >= UINT32_MAX) throw std::runtime_error("text to tokenize is over 4 GiB");
  std::vector<Piece> pieces;
  if (raw_matcher.empty()) {
    add_segment(text, {0, text.size()}, with_offsets, pieces);
  } else {
    for (const auto& split : raw_matcher.split(text)) {
      if (split.id < 0) {
        add_segment(text, split.range, with_offsets, pieces);
      } else {
        pieces.push_back(Piece{
            NormalizedText(text.substr(split.range.first, split.range.second - split.range.first),
                           split.range.first, with_offsets),
            split.id, false, split.range.first == 0});
      }
    }
  }
  if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);

  Encoding enc;
  enc.ids.reserve(text.size() / 3 + 4);
  std::vector<ModelToken> tokens;
  for (const auto& piece : pieces) {
    if (piece.added_id >= 0) {
      enc.ids.push_back(piece.added_id);
      if (with_offsets) {
        OriginSpan o = piece.text.origin(0, piece.text.size());
        enc.offsets.emplace_back(o.start, o.end);
      }
      continue;
    }
    tokens.clear();
    model->tokenize(piece.text.str(), piece.byte_level, tokens);
    for (const auto& t : tokens) {
      enc.ids.push_back(t.id);
      if (with_offsets) {
        OriginSpan o = piece.text.origin(t.start, t.end);
        enc.offsets.emplace_back(o.start, o.end);
      }
    }
  }
  if (post_processor) post_processor->process(enc, add_special_tokens, with_offsets);
  return enc;
}

Tokenizer::Tokenizer() : impl_(std::make_unique<Impl>()) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  std::filesystem::path file = path;
  if (std::filesystem::is_directory(file)) file /= "tokenizer.json";
  TokenizerFile parsed = read_tokenizer_file(file);
  return build(parsed.rest, file.string(), &parsed.tables);
}

Tokenizer Tokenizer::from_json(const json& j, const std::string& source) {
  return build(j, source, nullptr);
}

Tokenizer Tokenizer::build(const json& j, const std::string& source, BpeTables* tables) {
  Tokenizer tok;
  Impl& impl = *tok.impl_;
  impl.source = source;
  json_field::require_object(j, source);
  static const json kNull = nullptr;
  auto field = [&](const char* key) -> const json& {
    auto it = j.find(key);
    return it == j.end() ? kNull : *it;
  };
  impl.normalizer = make_normalizer(field("normalizer"), source + ": normalizer");
  impl.pre_tokenizer = make_pre_tokenizer(field("pre_tokenizer"), source + ": pre_tokenizer");
  const json& model = json_field::require(j, "model", source);
  impl.model = tables ? BpeModel::from_tables(model, std::move(*tables), source + ": model")
                      : BpeModel::from_json(model, source + ": model");
  impl.load_added_tokens(field("added_tokens"));
  impl.post_processor = make_post_processor(
      field("post_processor"), source + ": post_processor",
      [&impl](const std::string& name) -> std::optional<int32_t> {
        if (auto it = impl.added_by_content.find(name); it != impl.added_by_content.end())
          return it->second;
        return impl.model->token_to_id(name);
      });
  impl.decoder = make_decoder(field("decoder"), source + ": decoder");
  return tok;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->run(text, add_special_tokens, false).ids;
}

Encoding Tokenizer::encode_with_offsets(std::string_view text, bool add_special_tokens) const {
  return impl_->run(text, add_special_tokens, true);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const Impl& impl = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (auto it = impl.added_by_id.find(id); it != impl.added_by_id.end()) {
      const AddedToken& t = impl.added[it->second];
      if (skip_special_tokens && t.special) continue;
      tokens.push_back(t.content);
      continue;
    }
    const std::string* token = impl.model->id_to_token(id);
    if (token == nullptr)
      throw std::runtime_error("decode: token id " + std::to_string(id) + " is not in " +
                               impl.source);
    if (skip_special_tokens && impl.special_contents.count(*token)) continue;
    tokens.push_back(*token);
  }
  if (!impl.decoder) {
    std::string out;
    for (std::size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  impl.decoder->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

int64_t Tokenizer::vocab_size() const {
  int64_t max_id = impl_->model->max_id();
  for (const auto& t : impl_->added) max_id = std::max<int64_t>(max_id, t.id);
  return max_id + 1;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added_by_content.find(std::string(token));
      it != impl_->added_by_content.end())
    return it->second;
  return impl_->model->token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (auto it = impl_->added_by_id.find(id); it != impl_->added_by_id.end())
    return impl_->added[it->second].content;
  if (const std::string* t = impl_->model->id_to_token(id)) return *t;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  auto it = impl_->added_by_id.find(id);
  return it != impl_->added_by_id.end() && impl_->added[it->second].special;
}

}  // namespace lora::data
