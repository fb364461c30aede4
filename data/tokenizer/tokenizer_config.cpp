#include <fstream>
#include <stdexcept>

#include "data/tokenizer/tokenizer.h"

namespace lora::data {

namespace {
// A special token is written either as a string or as an AddedToken object {"content": ...}.
std::optional<std::string> token_field(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}
}  // namespace

TokenizerConfig TokenizerConfig::load(const std::filesystem::path& dir) {
  TokenizerConfig c;
  auto path = dir / "tokenizer_config.json";
  if (!std::filesystem::exists(path)) return c;
  std::ifstream f(path);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path.string() + ": invalid JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(path.string() + ": expected a JSON object");
  if (auto it = j.find("chat_template"); it != j.end()) {
    if (it->is_string()) {
      c.chat_template = it->get<std::string>();
    } else if (it->is_array()) {  // a list of named templates: use "default"
      for (const auto& t : *it)
        if (t.value("name", "") == "default" && t.contains("template"))
          c.chat_template = t["template"].get<std::string>();
    } else if (!it->is_null()) {
      throw std::runtime_error(path.string() + ": chat_template must be a string or a list");
    }
  }
  c.bos_token = token_field(j, "bos_token");
  c.eos_token = token_field(j, "eos_token");
  c.unk_token = token_field(j, "unk_token");
  c.pad_token = token_field(j, "pad_token");
  c.sep_token = token_field(j, "sep_token");
  c.cls_token = token_field(j, "cls_token");
  c.mask_token = token_field(j, "mask_token");
  c.add_bos_token = j.value("add_bos_token", false);
  c.add_eos_token = j.value("add_eos_token", false);
  return c;
}

}  // namespace lora::data
