#include "trainer/gguf_tokenizer_write.h"

#include <algorithm>
#include <fstream>
#include <limits>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <vector>

#include "trainer/gguf_tokenizer.h"

namespace lora {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

using namespace gguf_token_type;

[[noreturn]] void bad(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": " + what);
}

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  std::unordered_map<std::string, int64_t> ids;
};

bool is_byte_piece(const std::string& t) {
  return t.size() == 6 && t.starts_with("<0x") && t.back() == '>';
}

// Every id below vocab_size (and every id the tokenizer names) with its text and type.
Vocab vocab_of(const json& tokenizer, int64_t vocab_size, bool spm, const std::string& source) {
  const json& model = tokenizer.at("model");
  std::vector<std::optional<std::string>> by_id(
      static_cast<std::size_t>(std::max<int64_t>(0, vocab_size)));
  std::vector<int32_t> types(by_id.size(), kNormal);
  auto put = [&](int64_t id, const std::string& text, int32_t type) {
    if (id < 0 || id > std::numeric_limits<int32_t>::max())
      bad(source, "token '" + text + "' has id " + std::to_string(id));
    if (static_cast<std::size_t>(id) >= by_id.size()) {
      by_id.resize(static_cast<std::size_t>(id) + 1);
      types.resize(by_id.size(), kNormal);
    }
    by_id[static_cast<std::size_t>(id)] = text;
    types[static_cast<std::size_t>(id)] = type;
  };
  for (const auto& [text, id] : model.at("vocab").items())
    put(id.get<int64_t>(), text, spm && is_byte_piece(text) ? kByte : kNormal);
  for (const json& a : tokenizer.value("added_tokens", json::array()))
    put(a.at("id").get<int64_t>(), a.at("content").get<std::string>(),
        a.value("special", false) ? kControl : kUserDefined);
  // The unknown piece, unless it is an added special token (llama.cpp's converter: control).
  if (model.contains("unk_token") && model["unk_token"].is_string())
    for (std::size_t i = 0; i < by_id.size(); ++i)
      if (by_id[i] == model["unk_token"].get<std::string>() && types[i] == kNormal)
        types[i] = kUnknown;
  Vocab v;
  for (std::size_t i = 0; i < by_id.size(); ++i) {
    if (!by_id[i]) types[i] = kUnused;
    v.tokens.push_back(by_id[i].value_or("[PAD" + std::to_string(i) + "]"));
    v.ids.emplace(v.tokens.back(), static_cast<int64_t>(i));
  }
  v.types = std::move(types);
  return v;
}

// Merges as "left right" strings, from either spelling tokenizer.json uses.
std::vector<std::string> merges_of(const json& model, const std::string& source) {
  std::vector<std::string> out;
  for (const json& m : model.value("merges", json::array())) {
    if (m.is_string())
      out.push_back(m.get<std::string>());
    else if (m.is_array() && m.size() == 2)
      out.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    else
      bad(source, "a merge is neither \"a b\" nor [a, b]: " + m.dump());
  }
  return out;
}

// SentencePiece merges the adjacent pair whose union scores best; Hugging Face's BPE the pair of
// lowest merge rank. A piece scores minus the rank of the first merge making it, so both choose
// alike; pieces no merge makes rank after every merge, control tokens far below.
std::vector<float> spm_scores(const Vocab& v, const std::vector<std::string>& merges) {
  std::vector<float> scores(v.tokens.size());
  std::vector<int64_t> rank(v.tokens.size(), -1);
  for (std::size_t r = 0; r < merges.size(); ++r) {
    std::string merged = merges[r];
    merged.erase(merged.find(' '), 1);
    const auto it = v.ids.find(merged);
    if (it != v.ids.end() && rank[static_cast<std::size_t>(it->second)] < 0)
      rank[static_cast<std::size_t>(it->second)] = static_cast<int64_t>(r);
  }
  for (std::size_t i = 0; i < scores.size(); ++i) {
    const int32_t t = v.types[i];
    scores[i] = t == kByte     ? 0.0f
                : t != kNormal ? -1000.0f
                : rank[i] >= 0 ? -static_cast<float>(rank[i])
                               : -static_cast<float>(merges.size() + i);
  }
  return scores;
}

json without_trim_offsets(json j) {
  if (j.is_object()) {
    j.erase("trim_offsets");
    for (auto& [k, v] : j.items()) v = without_trim_offsets(v);
  } else if (j.is_array()) {
    for (auto& v : j) v = without_trim_offsets(v);
  }
  return j;
}

// llama.cpp's name of a byte-level pre-tokenizer (trim_offsets moves offsets, not ids).
std::string pre_name(const json& tokenizer, const std::string& source) {
  const json mine = without_trim_offsets(tokenizer.value("pre_tokenizer", json(nullptr)));
  for (std::string_view name : gguf_pre_tokenizer_names())
    if (without_trim_offsets(*gguf_pre_tokenizer_json(name)) == mine) return std::string(name);
  bad(source, "its pre-tokenizer is none that llama.cpp names (" + gguf_pre_tokenizer_list() +
                  "): " + mine.dump());
}

// Whether the post-processor's template puts a special token before (bos) or after (eos) the text.
std::pair<bool, bool> template_adds(const json& post) {
  if (!post.is_object()) return {false, false};
  if (post.value("type", "") == "Sequence") {
    std::pair<bool, bool> any{false, false};
    for (const json& p : post.value("processors", json::array())) {
      const auto [b, e] = template_adds(p);
      any = {any.first || b, any.second || e};
    }
    return any;
  }
  if (post.value("type", "") != "TemplateProcessing") return {false, false};
  const json& single = post.at("single");
  return {!single.empty() && single.front().contains("SpecialToken"),
          !single.empty() && single.back().contains("SpecialToken")};
}

std::optional<std::string> token_text(const json& config, const char* key) {
  if (!config.contains(key)) return std::nullopt;
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content")) return v["content"].get<std::string>();
  return std::nullopt;
}

void set_special_ids(GgufWriter& w, const Vocab& v, const json& config) {
  const std::pair<const char*, const char*> keys[] = {
      {"bos_token", "tokenizer.ggml.bos_token_id"},
      {"eos_token", "tokenizer.ggml.eos_token_id"},
      {"unk_token", "tokenizer.ggml.unknown_token_id"},
      {"pad_token", "tokenizer.ggml.padding_token_id"}};
  for (const auto& [config_key, gguf_key] : keys) {
    const auto text = token_text(config, config_key);
    const auto it = text ? v.ids.find(*text) : v.ids.end();
    if (it != v.ids.end()) w.set_u32(gguf_key, static_cast<uint32_t>(it->second));
  }
}

std::optional<std::string> chat_template_of(const json& config) {
  if (!config.contains("chat_template")) return std::nullopt;
  const json& t = config["chat_template"];
  if (t.is_string()) return t.get<std::string>();
  if (t.is_array())  // named templates: the default one
    for (const json& named : t)
      if (named.value("name", "") == "default") return named.at("template").get<std::string>();
  return std::nullopt;
}

bool prepends_space(const json& normalizer) {
  const std::string dump = normalizer.dump();
  return dump.find("\"Prepend\"") != std::string::npos;
}

}  // namespace

void set_gguf_tokenizer(GgufWriter& w, const json& tokenizer, const json& tokenizer_config,
                        int64_t vocab_size, const std::string& source) {
  const json& model = tokenizer.at("model");
  if (model.value("type", "") != "BPE")
    bad(source,
        "tokenizer model '" + model.value("type", "?") + "' cannot be written to GGUF (BPE can)");
  const bool spm = model.value("byte_fallback", false);
  const Vocab v = vocab_of(tokenizer, vocab_size, spm, source);
  const std::vector<std::string> merges = merges_of(model, source);
  w.set_string("tokenizer.ggml.model", spm ? "llama" : "gpt2");
  w.set_string("tokenizer.ggml.pre", spm ? "default" : pre_name(tokenizer, source));
  w.set_strings("tokenizer.ggml.tokens", v.tokens);
  if (spm) w.set_f32s("tokenizer.ggml.scores", spm_scores(v, merges));
  w.set_i32s("tokenizer.ggml.token_type", v.types);
  if (!spm) w.set_strings("tokenizer.ggml.merges", merges);
  set_special_ids(w, v, tokenizer_config);
  auto [add_bos, add_eos] = template_adds(tokenizer.value("post_processor", json(nullptr)));
  if (!tokenizer.contains("post_processor") || tokenizer["post_processor"].is_null()) {
    add_bos = tokenizer_config.value("add_bos_token", false);
    add_eos = tokenizer_config.value("add_eos_token", false);
  }
  w.set_bool("tokenizer.ggml.add_bos_token", add_bos);
  w.set_bool("tokenizer.ggml.add_eos_token", add_eos);
  if (spm)
    w.set_bool("tokenizer.ggml.add_space_prefix",
               prepends_space(tokenizer.value("normalizer", json(nullptr))));
  if (const auto t = chat_template_of(tokenizer_config))
    w.set_string("tokenizer.chat_template", *t);
}

void set_gguf_tokenizer_of_folder(GgufWriter& w, const fs::path& dir, int64_t vocab_size) {
  auto read = [](const fs::path& p) {
    std::ifstream in(p);
    if (!in) throw std::runtime_error(p.string() + ": cannot be read");
    try {
      return json::parse(in);
    } catch (const json::exception& e) {
      throw std::runtime_error(p.string() + ": " + e.what());
    }
  };
  const fs::path config = dir / "tokenizer_config.json";
  set_gguf_tokenizer(w, read(dir / "tokenizer.json"),
                     fs::exists(config) ? read(config) : json::object(), vocab_size,
                     (dir / "tokenizer.json").string());
}

}  // namespace lora
