#include "trainer/generate.h"

namespace lora {

GenerateResult generate(const Model& model, const AdapterStack& adapters,
                        std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token) {
  Decoding decoding(model, adapters, {prompt.begin(), prompt.end()}, options);
  while (const auto id = decoding.next())
    if (on_token) on_token(*id);
  GenerateResult result;
  result.tokens.assign(decoding.tokens().begin(), decoding.tokens().end());
  result.stop_reason = decoding.stop_reason();
  result.prompt_seconds = decoding.prompt_seconds();
  result.generate_seconds = decoding.generate_seconds();
  return result;
}

StreamDecoder::StreamDecoder(const data::Tokenizer& tokenizer, std::span<const int32_t> prefix)
    : tokenizer_(tokenizer), ids_(prefix.begin(), prefix.end()) {
  prefix_text_ = tokenizer_.decode(ids_, /*skip_special_tokens=*/true);
  emitted_ = prefix_text_.size();
}

std::string StreamDecoder::push(int32_t id) {
  // Models pad their vocabulary past the tokenizer (Qwen2.5: 151936 rows for 151665 tokens); a
  // padding id has no text, so it writes none instead of failing the whole reply.
  if (!tokenizer_.id_to_token(id)) return {};
  ids_.push_back(id);
  const std::string text = tokenizer_.decode(ids_, /*skip_special_tokens=*/true);
  // A character split across byte-fallback tokens decodes as U+FFFD until its last byte arrives.
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  if (text.size() >= kReplacement.size() &&
      text.compare(text.size() - kReplacement.size(), kReplacement.size(), kReplacement) == 0)
    return {};
  if (text.size() <= emitted_) return {};
  std::string piece = text.substr(emitted_);
  emitted_ = text.size();
  return piece;
}

std::string StreamDecoder::finish() {
  const std::string text = tokenizer_.decode(ids_, /*skip_special_tokens=*/true);
  if (text.size() <= emitted_) return {};
  std::string piece = text.substr(emitted_);
  emitted_ = text.size();
  return piece;
}

}  // namespace lora
