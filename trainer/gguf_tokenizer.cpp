#include "trainer/gguf_tokenizer.h"

#include <algorithm>
#include <array>
#include <stdexcept>
#include <unordered_map>

#include "trainer/gguf_model.h"

namespace lora {

using json = nlohmann::json;

namespace {

using namespace gguf_token_type;

[[noreturn]] void bad(const GgufFile& f, const std::string& what) {
  throw std::runtime_error(f.path().string() + ": " + what);
}

std::size_t utf8_length(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 6) return 2;
  if ((lead >> 4) == 14) return 3;
  if ((lead >> 3) == 30) return 4;
  return 1;
}

// SentencePiece BPE as merges: every split of a piece into two pieces of the vocabulary is a
// merge, ranked by the merged piece's score (highest first), the splits of one piece longest left
// half first (the order of the reference tokenizer.json files). SentencePiece merges the pair whose
// union scores best, so the ranks reproduce its choices. Only cuts where both halves have the
// length of some piece are looked up, so one very long piece costs its length, not its square.
json spm_merges(const std::vector<std::string>& tokens, const std::vector<double>& scores) {
  std::unordered_map<std::string_view, int64_t> id;
  std::size_t longest = 0;
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    id.emplace(tokens[i], static_cast<int64_t>(i));
    longest = std::max(longest, tokens[i].size());
  }
  std::vector<bool> is_length(longest + 1, false);
  for (const auto& t : tokens) is_length[t.size()] = true;
  struct Merge {
    double score;
    int64_t left, right;
  };
  std::vector<Merge> merges;
  for (std::size_t t = 0; t < tokens.size(); ++t) {
    const std::string_view piece = tokens[t];
    if (piece.empty()) continue;
    std::vector<Merge> local;
    for (std::size_t cut = utf8_length(static_cast<unsigned char>(piece[0])); cut < piece.size();
         cut += utf8_length(static_cast<unsigned char>(piece[cut]))) {
      if (!is_length[cut] || !is_length[piece.size() - cut]) continue;
      auto l = id.find(piece.substr(0, cut)), r = id.find(piece.substr(cut));
      if (l != id.end() && r != id.end()) local.push_back({scores[t], l->second, r->second});
    }
    std::reverse(local.begin(), local.end());  // longest left half first
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(),
                   [](const Merge& a, const Merge& b) { return a.score > b.score; });
  json out = json::array();
  for (const Merge& m : merges) out.push_back(json::array({tokens[m.left], tokens[m.right]}));
  return out;
}

json special_token(int64_t id, const std::string& content, bool special) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", special}};
}

json post_processor(const GgufFile& f, const std::vector<std::string>& tokens, bool add_bos,
                    bool add_eos) {
  json single = json::array(), special = json::object();
  auto add = [&](const char* key, json& seq) {
    const auto idv = f.int_or(key);
    if (!idv || *idv < 0 || *idv >= static_cast<int64_t>(tokens.size()))
      bad(f, std::string("metadata '") + key + "' is missing or out of range");
    const std::string& t = tokens[static_cast<std::size_t>(*idv)];
    seq.push_back({{"SpecialToken", {{"id", t}, {"type_id", 0}}}});
    special[t] = {{"id", t}, {"ids", {*idv}}, {"tokens", {t}}};
  };
  if (add_bos) add("tokenizer.ggml.bos_token_id", single);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (add_eos) add("tokenizer.ggml.eos_token_id", single);
  return {{"type", "TemplateProcessing"},
          {"single", single},
          {"pair", single},
          {"special_tokens", special}};
}

// The tokens of the file, checked: strings, and one token type per token when types are given.
struct GgufVocab {
  const std::vector<std::string>& tokens;
  const GgufValue* types;
  int64_t type(std::size_t i) const { return types ? types->integers[i] : int64_t{kNormal}; }
};

GgufVocab vocab_of(const GgufFile& f) {
  const GgufValue* tokens_v = f.find("tokenizer.ggml.tokens");
  const GgufValue* types_v = f.find("tokenizer.ggml.token_type");
  if (!tokens_v || tokens_v->element_type != GgufType::String)
    bad(f, "metadata 'tokenizer.ggml.tokens' is missing or not strings");
  if (types_v && types_v->integers.size() != tokens_v->strings.size())
    bad(f, "metadata 'tokenizer.ggml.token_type' must hold one integer per token (" +
               std::to_string(tokens_v->strings.size()) + ")");
  return {tokens_v->strings, types_v};
}

// Byte-level BPE (tokenizer.ggml.model "gpt2"): the vocabulary and merges as they are, control
// tokens as special added tokens and user-defined ones as plain added tokens, the pre-tokenizer
// named by tokenizer.ggml.pre.
json gpt2_tokenizer_json(const GgufFile& f) {
  const GgufVocab v = vocab_of(f);
  const std::string pre = f.string_or("tokenizer.ggml.pre").value_or("gpt-2");
  const auto pre_tokenizer = gguf_pre_tokenizer_json(pre);
  if (!pre_tokenizer)
    bad(f, "tokenizer.ggml.pre '" + pre + "' is not supported (" + gguf_pre_tokenizer_list() +
               " are)");
  const GgufValue* merges_v = f.find("tokenizer.ggml.merges");
  if (!merges_v || merges_v->element_type != GgufType::String)
    bad(f, "metadata 'tokenizer.ggml.merges' is missing or not strings");
  json vocab = json::object(), added = json::array();
  for (std::size_t i = 0; i < v.tokens.size(); ++i) {
    vocab[v.tokens[i]] = i;
    const int64_t type = v.type(i);
    if (type == kControl || type == kUserDefined)
      added.push_back(special_token(static_cast<int64_t>(i), v.tokens[i], type == kControl));
  }
  json merges = json::array();
  for (std::size_t i = 0; i < merges_v->strings.size(); ++i) {
    const std::string& m = merges_v->strings[i];
    const auto space = m.find(' ');
    if (space == std::string::npos || space == 0 || space + 1 == m.size())
      bad(f, "tokenizer.ggml.merges[" + std::to_string(i) + "] '" + m +
                 "' is not two tokens separated by a space");
    merges.push_back(json::array({m.substr(0, space), m.substr(space + 1)}));
  }
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = gguf_pre_normalizer_json(pre);
  j["pre_tokenizer"] = *pre_tokenizer;
  j["post_processor"] =
      post_processor(f, v.tokens, f.bool_or("tokenizer.ggml.add_bos_token").value_or(false),
                     f.bool_or("tokenizer.ggml.add_eos_token").value_or(false));
  j["decoder"] = {{"type", "ByteLevel"},
                  {"add_prefix_space", true},
                  {"trim_offsets", true},
                  {"use_regex", true}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", nullptr},
                {"continuing_subword_prefix", ""},
                {"end_of_word_suffix", ""},
                {"fuse_unk", false},
                {"byte_fallback", false},
                {"ignore_merges", gguf_pre_ignores_merges(pre)},
                {"vocab", vocab},
                {"merges", merges}};
  return j;
}

// SentencePiece BPE (tokenizer.ggml.model "llama").
json spm_tokenizer_json(const GgufFile& f) {
  const GgufValue* tokens_v = f.find("tokenizer.ggml.tokens");
  const GgufValue* scores_v = f.find("tokenizer.ggml.scores");
  const GgufValue* types_v = f.find("tokenizer.ggml.token_type");
  if (!tokens_v || tokens_v->element_type != GgufType::String)
    bad(f, "metadata 'tokenizer.ggml.tokens' is missing or not strings");
  const auto& tokens = tokens_v->strings;
  const std::size_t n = tokens.size();
  if (!scores_v || scores_v->reals.size() != n)
    bad(f, "metadata 'tokenizer.ggml.scores' must hold one float per token (" + std::to_string(n) +
               ")");
  if (types_v && types_v->integers.size() != n)
    bad(f, "metadata 'tokenizer.ggml.token_type' must hold one integer per token (" +
               std::to_string(n) + ")");
  json vocab = json::object(), added = json::array();
  for (std::size_t i = 0; i < n; ++i) {
    vocab[tokens[i]] = i;
    const int64_t type = types_v ? types_v->integers[i] : int64_t{kNormal};
    if (type == kControl || type == kUnknown || type == kUserDefined)
      added.push_back(special_token(static_cast<int64_t>(i), tokens[i], type != kUserDefined));
  }
  const auto unk = f.int_or("tokenizer.ggml.unknown_token_id");
  const bool space_prefix = f.bool_or("tokenizer.ggml.add_space_prefix").value_or(true);
  // As Hugging Face's Llama converter writes it: spaces at the ends of a segment (text between
  // special tokens) dropped and runs of spaces collapsed before the prefix.
  json normalizers = json::array(
      {json{{"type", "Replace"}, {"pattern", {{"Regex", "\\A +| +\\z"}}}, {"content", ""}},
       json{{"type", "Replace"}, {"pattern", {{"Regex", " {2,}"}}}, {"content", " "}}});
  if (space_prefix) normalizers.push_back({{"type", "Prepend"}, {"prepend", "\xe2\x96\x81"}});
  normalizers.push_back(
      {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xe2\x96\x81"}});
  json decoders = json::array(
      {json{{"type", "Replace"}, {"pattern", {{"String", "\xe2\x96\x81"}}}, {"content", " "}},
       json{{"type", "ByteFallback"}}, json{{"type", "Fuse"}}});
  if (space_prefix)
    decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  json j;
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["added_tokens"] = added;
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", normalizers}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] =
      post_processor(f, tokens, f.bool_or("tokenizer.ggml.add_bos_token").value_or(true),
                     f.bool_or("tokenizer.ggml.add_eos_token").value_or(false));
  j["decoder"] = {{"type", "Sequence"}, {"decoders", decoders}};
  j["model"] = {{"type", "BPE"},
                {"dropout", nullptr},
                {"unk_token", unk && *unk >= 0 && static_cast<std::size_t>(*unk) < n
                                  ? json(tokens[static_cast<std::size_t>(*unk)])
                                  : json(nullptr)},
                {"continuing_subword_prefix", nullptr},
                {"end_of_word_suffix", nullptr},
                {"fuse_unk", true},
                {"byte_fallback", true},
                {"ignore_merges", false},
                {"vocab", vocab},
                {"merges", spm_merges(tokens, scores_v->reals)}};
  return j;
}

}  // namespace

// llama.cpp's names of the byte-level pre-tokenizers (tokenizer.ggml.pre) and the Hugging Face
// pre_tokenizer of each: llama-bpe (Llama 3: letters, numbers in threes), qwen2 (numbers one by
// one), smollm (digits one by one, then GPT-2's split), gpt-2.
namespace {

constexpr std::string_view kLlama3Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::string_view kQwen2Split =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr std::array<std::string_view, 4> kPreNames{"llama-bpe", "qwen2", "smollm", "gpt-2"};

json byte_level(bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

json split_then_bytes(std::string_view regex) {
  return {{"type", "Sequence"},
          {"pretokenizers", json::array({json{{"type", "Split"},
                                              {"pattern", {{"Regex", regex}}},
                                              {"behavior", "Isolated"},
                                              {"invert", false}},
                                         byte_level(false)})}};
}

}  // namespace

std::optional<json> gguf_pre_tokenizer_json(std::string_view pre) {
  if (pre == "llama-bpe" || pre == "llama3") return split_then_bytes(kLlama3Split);
  if (pre == "qwen2") return split_then_bytes(kQwen2Split);
  if (pre == "smollm")
    return json{
        {"type", "Sequence"},
        {"pretokenizers",
         json::array({json{{"type", "Digits"}, {"individual_digits", true}}, byte_level(true)})}};
  if (pre == "gpt-2" || pre == "default") return byte_level(true);
  return std::nullopt;
}

json gguf_pre_normalizer_json(std::string_view pre) {
  return pre == "qwen2" ? json{{"type", "NFC"}} : json(nullptr);
}

bool gguf_pre_ignores_merges(std::string_view pre) { return pre == "llama-bpe" || pre == "llama3"; }

std::span<const std::string_view> gguf_pre_tokenizer_names() { return kPreNames; }

std::string gguf_pre_tokenizer_list() {
  std::string s;
  for (std::string_view n : kPreNames) s += (s.empty() ? "" : ", ") + std::string(n);
  return s;
}

json gguf_tokenizer_json(const GgufFile& f) {
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama") return spm_tokenizer_json(f);
  if (model == "gpt2") return gpt2_tokenizer_json(f);
  bad(f, "tokenizer.ggml.model '" + model +
             "' is not supported (llama SentencePiece and gpt2 byte-level BPE are)");
}

data::TokenizerConfig gguf_tokenizer_config(const GgufFile& f) {
  data::TokenizerConfig c;
  c.chat_template = f.string_or("tokenizer.chat_template");
  const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
  auto token = [&](const char* key) -> std::optional<std::string> {
    const auto id = f.int_or(key);
    if (!id || !tokens || *id < 0 || static_cast<std::size_t>(*id) >= tokens->strings.size())
      return std::nullopt;
    return tokens->strings[static_cast<std::size_t>(*id)];
  };
  c.bos_token = token("tokenizer.ggml.bos_token_id");
  c.eos_token = token("tokenizer.ggml.eos_token_id");
  c.unk_token = token("tokenizer.ggml.unknown_token_id");
  c.pad_token = token("tokenizer.ggml.padding_token_id");
  c.add_bos_token = f.bool_or("tokenizer.ggml.add_bos_token")
                        .value_or(f.get_string("tokenizer.ggml.model") == "llama");
  c.add_eos_token = f.bool_or("tokenizer.ggml.add_eos_token").value_or(false);
  return c;
}

data::Tokenizer load_model_tokenizer(const std::filesystem::path& model) {
  if (!is_gguf_file(model)) return data::Tokenizer::load(model);
  const GgufFile f = GgufFile::open(model);
  return data::Tokenizer::from_json(gguf_tokenizer_json(f),
                                    model.string() + " (tokenizer metadata)");
}

data::TokenizerConfig load_model_tokenizer_config(const std::filesystem::path& model) {
  if (!is_gguf_file(model)) return data::TokenizerConfig::load(model);
  return gguf_tokenizer_config(GgufFile::open(model));
}

}  // namespace lora
