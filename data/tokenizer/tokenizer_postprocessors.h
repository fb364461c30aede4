// tokenizer.json post-processors: TemplateProcessing, ByteLevel, BertProcessing,
// RobertaProcessing and Sequence. They add special tokens around a single sequence.
#pragma once
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "data/tokenizer/tokenizer.h"

namespace lora::data {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens of a single sequence when `add_special_tokens`. `with_offsets`
  // says whether `enc.offsets` is kept in step with `enc.ids`.
  virtual void process(Encoding& enc, bool add_special_tokens, bool with_offsets) const = 0;
};

// nullptr for a null post-processor. `token_id` resolves a token name to its id.
std::unique_ptr<PostProcessor> make_post_processor(
    const nlohmann::json& j, const std::string& where,
    const std::function<std::optional<int32_t>(const std::string&)>& token_id);

}  // namespace lora::data
