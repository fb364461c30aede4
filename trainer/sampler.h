// Picking the next token from a logits row: repetition penalty, temperature, top-k, top-p (nucleus)
// and min-p, seeded. One sampler serves `lora generate` and the server.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace lora {

struct SamplingOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax of the penalized logits)
  float top_p = 1.0f;        // nucleus: sample from the smallest set holding this much mass
  uint64_t seed = 0;
  int64_t top_k = 0;                // keep only the k most likely tokens (0 = all)
  float min_p = 0.0f;               // drop tokens less likely than min_p * the most likely one
  float repetition_penalty = 1.0f;  // CTRL's: a seen token's logit is divided (> 0) or
                                    // multiplied (< 0) by this; 1 = off
};

// Checks the settings; the message names the setting and its allowed range.
void validate(const SamplingOptions& options);

// Deterministic for a given seed. The filters run in Hugging Face's order: penalty, temperature,
// top-k, top-p, min-p; each keeps at least the most likely token.
class Sampler {
 public:
  explicit Sampler(const SamplingOptions& options);
  // `seen` (prompt and generated ids so far) feeds the repetition penalty.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> seen = {});
  // The distribution sample() draws from, over the whole vocabulary (zeros for filtered tokens;
  // one-hot when greedy).
  std::vector<double> distribution(std::span<const float> logits,
                                   std::span<const int32_t> seen = {});

 private:
  // Fills kept_ with the (probability, id) pairs left after the filters, summing to 1.
  void filter(std::span<const float> logits, std::span<const int32_t> seen);
  int32_t argmax() const;
  std::size_t sort_kept_prefix(double total);

  SamplingOptions options_;
  std::mt19937_64 rng_;
  std::vector<float> work_;                       // penalized logits
  std::vector<std::pair<double, int32_t>> kept_;  // (probability, id), reused per token
};

}  // namespace lora
