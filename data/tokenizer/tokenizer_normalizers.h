// tokenizer.json normalizers: NFC, NFD, NFKC, NFKD, Lowercase, Prepend, Replace, Strip,
// StripAccents and Sequence. Others are errors that name them.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "data/tokenizer/tokenizer_text.h"

namespace lora::data {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(NormalizedText& text) const = 0;
};

// nullptr for a null normalizer.
std::unique_ptr<Normalizer> make_normalizer(const nlohmann::json& j, const std::string& where);

}  // namespace lora::data
