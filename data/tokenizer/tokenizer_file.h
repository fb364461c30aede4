// Reading a tokenizer.json fast: the big model.vocab and model.merges tables stream straight
// into plain vectors while the rest becomes a JSON tree (a DOM of 262k vocab entries and 515k
// merge pairs would take seconds to build).
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace lora::data {

struct BpeTables {
  std::vector<std::pair<std::string, int64_t>> vocab;  // token, id
  std::vector<std::pair<std::string, std::string>> merges;
  bool has_vocab = false;
};

struct TokenizerFile {
  nlohmann::json rest;  // everything but model.vocab and model.merges
  BpeTables tables;
};

// Errors name the file and what is wrong.
TokenizerFile read_tokenizer_file(const std::filesystem::path& file);

// The tables of a model object that holds them as JSON; `where` names it in errors.
BpeTables tables_from_json(const nlohmann::json& model, const std::string& where);

}  // namespace lora::data
