// Text generation with the KV-cached forward (a whole Decoding at once), and streaming decode of
// the new text.
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"
#include "trainer/decoding.h"

namespace lora {

struct GenerateResult {
  std::vector<int32_t> tokens;  // generated ids, stop token excluded
  std::string stop_reason;      // "stop_token" or "max_tokens"
  double prompt_seconds = 0;    // prefill
  double generate_seconds = 0;  // every token after the prefill
};

// Runs the prompt through the model, then samples up to max_tokens new ids; `on_token` (if set)
// sees each new id as it is produced.
GenerateResult generate(const Model& model, const AdapterStack& adapters,
                        std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token = {});

// Turns a growing id sequence into text pieces: each push returns only the new text, holding back
// bytes that are not yet a whole UTF-8 character (byte-fallback tokens split characters).
class StreamDecoder {
 public:
  // `prefix` (the prompt) is decoded together with the new ids, so word spacing at the seam is
  // right, but only text after it is returned; prefix_text() is what it decodes to.
  explicit StreamDecoder(const data::Tokenizer& tokenizer, std::span<const int32_t> prefix = {});
  const std::string& prefix_text() const { return prefix_text_; }
  std::string push(int32_t id);
  std::string finish();  // whatever is held back

 private:
  const data::Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  std::string prefix_text_;
  std::size_t emitted_ = 0;  // bytes of the decoded text already returned
};

}  // namespace lora
