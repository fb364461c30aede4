// Reading tokenizer.json fields with errors that name the file, the component and the field.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

namespace lora::data::json_field {

using nlohmann::json;

// `where` is a path such as "tokenizer.json: normalizer.normalizers[1]".
const json& require(const json& j, const char* key, const std::string& where);
std::string require_string(const json& j, const char* key, const std::string& where);
const json& require_object(const json& j, const std::string& where);
std::string type_of(const json& component, const std::string& where);  // its "type" field

// Optional fields: `fallback` when missing or null; a wrong type is an error.
bool get_bool(const json& j, const char* key, bool fallback, const std::string& where);
std::string get_string(const json& j, const char* key, const std::string& fallback,
                       const std::string& where);
int64_t get_int(const json& j, const char* key, int64_t fallback, const std::string& where);

// A pattern object: {"String": "..."} or {"Regex": "..."}. `is_regex` tells which.
std::string pattern(const json& j, const std::string& where, bool& is_regex);

// A field that must hold exactly one character (a Metaspace replacement, a delimiter, ...).
char32_t single_char(const std::string& value, const std::string& where, const char* field);

// The components of a Sequence: `make(item, item_where)` for each entry of the list at `key`;
// null entries (nullptr results) are skipped.
template <typename T, typename Make>
std::vector<std::unique_ptr<T>> component_list(const json& j, const char* key,
                                               const std::string& where, Make make) {
  const json& list = require(j, key, where);
  if (!list.is_array()) throw std::runtime_error(where + ": \"" + key + "\" must be a list");
  std::vector<std::unique_ptr<T>> parts;
  for (std::size_t i = 0; i < list.size(); ++i) {
    auto part =
        make(list[i], where + "." + key + "[" + std::to_string(i) + "]", i + 1 == list.size());
    if (part) parts.push_back(std::move(part));
  }
  return parts;
}

}  // namespace lora::data::json_field
