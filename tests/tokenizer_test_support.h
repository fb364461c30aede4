// What the tokenizer tests share: the shared folder's tokenizers, each loaded once per test
// program, and readable test names made from file names.
#pragma once
#include <cctype>
#include <map>
#include <memory>
#include <string>

#include "data/tokenizer/tokenizer.h"
#include "tests/support/test_support.h"

namespace lora::test {

inline const data::Tokenizer& shared_tokenizer(const std::string& relative) {
  static std::map<std::string, std::unique_ptr<data::Tokenizer>> loaded;
  auto& slot = loaded[relative];
  if (!slot)
    slot = std::make_unique<data::Tokenizer>(data::Tokenizer::load(shared_dir() / relative));
  return *slot;
}

// "llama2-tinyllama-hf" -> "llama2_tinyllama_hf" (gtest names allow only letters, digits, _).
inline std::string test_name(std::string name) {
  for (auto& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

}  // namespace lora::test
