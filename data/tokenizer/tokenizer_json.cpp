#include "data/tokenizer/tokenizer_json.h"

#include <stdexcept>

#include "data/tokenizer/unicode_utf8.h"

namespace lora::data::json_field {

const json& require(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null())
    throw std::runtime_error(where + ": missing field \"" + key + "\"");
  return *it;
}

std::string require_string(const json& j, const char* key, const std::string& where) {
  const json& v = require(j, key, where);
  if (!v.is_string()) throw std::runtime_error(where + ": field \"" + key + "\" must be a string");
  return v.get<std::string>();
}

const json& require_object(const json& j, const std::string& where) {
  if (!j.is_object()) throw std::runtime_error(where + ": expected a JSON object");
  return j;
}

std::string type_of(const json& component, const std::string& where) {
  require_object(component, where);
  return require_string(component, "type", where);
}

bool get_bool(const json& j, const char* key, bool fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_boolean())
    throw std::runtime_error(where + ": field \"" + key + "\" must be true or false");
  return it->get<bool>();
}

std::string get_string(const json& j, const char* key, const std::string& fallback,
                       const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_string())
    throw std::runtime_error(where + ": field \"" + key + "\" must be a string");
  return it->get<std::string>();
}

int64_t get_int(const json& j, const char* key, int64_t fallback, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number_integer())
    throw std::runtime_error(where + ": field \"" + key + "\" must be an integer");
  return it->get<int64_t>();
}

std::string pattern(const json& j, const std::string& where, bool& is_regex) {
  const json& p = require(j, "pattern", where);
  if (p.is_object() && p.size() == 1) {
    if (auto it = p.find("String"); it != p.end() && it->is_string()) {
      is_regex = false;
      return it->get<std::string>();
    }
    if (auto it = p.find("Regex"); it != p.end() && it->is_string()) {
      is_regex = true;
      return it->get<std::string>();
    }
  }
  throw std::runtime_error(where + ": \"pattern\" must be {\"String\": ...} or {\"Regex\": ...}");
}

char32_t single_char(const std::string& value, const std::string& where, const char* field) {
  std::size_t pos = 0;
  if (value.empty() || unicode::find_invalid_utf8(value) != std::string::npos ||
      (unicode::next_code_point(value, pos), pos != value.size()))
    throw std::runtime_error(where + ": \"" + field + "\" must be one character");
  pos = 0;
  return unicode::next_code_point(value, pos);
}

}  // namespace lora::data::json_field
