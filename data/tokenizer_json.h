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

}  // namespace lora::data::json_field
