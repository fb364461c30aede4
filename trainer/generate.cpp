#include "trainer/generate.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>

namespace lora {

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {
  if (!(options.temperature >= 0.0f) || !std::isfinite(options.temperature))
    throw std::invalid_argument("temperature must be >= 0, got " +
                                std::to_string(options.temperature));
  if (!(options.top_p > 0.0f && options.top_p <= 1.0f))
    throw std::invalid_argument("top-p must be in (0, 1], got " + std::to_string(options.top_p));
}

int32_t Sampler::sample(std::span<const float> logits) {
  if (logits.empty()) throw std::invalid_argument("cannot sample from an empty logits row");
  if (options_.temperature == 0.0f)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());

  // Softmax of logits / T, in a stable form.
  const float inv_t = 1.0f / options_.temperature;
  const float max_logit = *std::max_element(logits.begin(), logits.end());
  scratch_.resize(logits.size());
  double total = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    const float p = std::exp((logits[i] - max_logit) * inv_t);
    scratch_[i] = {p, static_cast<int32_t>(i)};
    total += p;
  }
  std::size_t keep = scratch_.size();
  if (options_.top_p < 1.0f) {
    // Most likely first; keep the smallest prefix whose mass reaches top_p.
    std::sort(scratch_.begin(), scratch_.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    double mass = 0;
    for (keep = 0; keep < scratch_.size();) {
      mass += scratch_[keep++].first;
      if (mass >= options_.top_p * total) break;
    }
    total = mass;
  }
  double r = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (std::size_t i = 0; i < keep; ++i) {
    r -= scratch_[i].first;
    if (r < 0) return scratch_[i].second;
  }
  return scratch_[keep - 1].second;  // rounding left a sliver: the last kept token
}

GenerateResult generate(const Model& model, const AdapterStack& adapters,
                        std::span<const int32_t> prompt, const GenerateOptions& options,
                        const std::function<void(int32_t)>& on_token) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt has no tokens");
  if (options.max_tokens < 0) throw std::invalid_argument("generate: max tokens must be >= 0");
  const int64_t vocab = model.config.vocab_size;
  for (int32_t id : prompt)
    if (id < 0 || id >= vocab)
      throw std::invalid_argument("generate: prompt token " + std::to_string(id) +
                                  " is outside the vocabulary of " + std::to_string(vocab));
  using clock = std::chrono::steady_clock;
  GenerateResult result;
  result.stop_reason = "max_tokens";
  Sampler sampler(options.sampling);
  KVCache cache =
      KVCache::create(model.config, static_cast<int64_t>(prompt.size()) + options.max_tokens + 1);

  auto t0 = clock::now();
  Tensor logits = forward_cached(model, adapters, cache, prompt);
  auto t1 = clock::now();
  result.prompt_seconds = std::chrono::duration<double>(t1 - t0).count();
  for (int64_t step = 0; step < options.max_tokens; ++step) {
    const int64_t last = logits.dim(0) - 1;
    const int32_t id =
        sampler.sample({logits.ptr() + last * vocab, static_cast<std::size_t>(vocab)});
    if (std::find(options.stop_ids.begin(), options.stop_ids.end(), id) != options.stop_ids.end()) {
      result.stop_reason = "stop_token";
      break;
    }
    result.tokens.push_back(id);
    if (on_token) on_token(id);
    if (step + 1 < options.max_tokens) logits = forward_cached(model, adapters, cache, {&id, 1});
  }
  result.generate_seconds = std::chrono::duration<double>(clock::now() - t1).count();
  return result;
}

StreamDecoder::StreamDecoder(const data::Tokenizer& tokenizer, std::span<const int32_t> prefix)
    : tokenizer_(tokenizer), ids_(prefix.begin(), prefix.end()) {
  prefix_text_ = tokenizer_.decode(ids_, /*skip_special_tokens=*/true);
  emitted_ = prefix_text_.size();
}

std::string StreamDecoder::push(int32_t id) {
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
