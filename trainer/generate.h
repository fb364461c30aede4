// Text generation with the KV-cached forward: sampling (greedy, temperature, top-p, seeded),
// stop tokens, and streaming decode of the new text.
#pragma once
#include <cstdint>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"
#include "trainer/transformer.h"

namespace lora {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax)
  float top_p = 1.0f;        // nucleus: sample from the smallest set holding this much mass
  uint64_t seed = 0;
};

// Picks the next token from a logits row. Deterministic for a given seed.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  int32_t sample(std::span<const float> logits);

 private:
  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> scratch_;  // (probability, id), reused per token
};

struct GenerateOptions {
  int64_t max_tokens = 100;
  SamplingOptions sampling;
  std::vector<int32_t> stop_ids;  // generation ends after one of these (it is not emitted)
};

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
