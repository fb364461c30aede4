#include "trainer/decoding.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "autograd/parallel.h"

namespace lora {

namespace {

std::vector<int32_t> checked_prompt(const Model& model, std::vector<int32_t> prompt,
                                    const GenerateOptions& options) {
  if (prompt.empty()) throw std::invalid_argument("generate: the prompt has no tokens");
  if (options.max_tokens < 0) throw std::invalid_argument("generate: max tokens must be >= 0");
  const int64_t vocab = model.config.vocab_size;
  for (int32_t id : prompt)
    if (id < 0 || id >= vocab)
      throw std::invalid_argument("generate: prompt token " + std::to_string(id) +
                                  " is outside the vocabulary of " + std::to_string(vocab));
  return prompt;
}

}  // namespace

Decoding::Decoding(const Model& model, AdapterStack adapters, std::vector<int32_t> prompt,
                   const GenerateOptions& options)
    : model_(model),
      adapters_(std::move(adapters)),
      options_(options),
      sampler_(options.sampling),
      history_(checked_prompt(model, std::move(prompt), options)),
      prompt_size_(history_.size()),
      step_team_(make_spin_team()) {
  cache_ = KVCache::create(
      model.config, static_cast<int64_t>(prompt_size_) + options.max_tokens + 1, options.kv_cache);
  history_.reserve(prompt_size_ + static_cast<std::size_t>(options.max_tokens));
}

bool Decoding::below_max_tokens() {
  if (finished()) return false;
  if (static_cast<int64_t>(history_.size() - prompt_size_) < options_.max_tokens) return true;
  stop_reason_ = "max_tokens";
  return false;
}

bool Decoding::decode_due() { return below_max_tokens() && !tokens().empty(); }

std::optional<int32_t> Decoding::next() {
  using clock = std::chrono::steady_clock;
  if (!below_max_tokens()) return std::nullopt;
  const bool prefill = tokens().empty();
  const auto t0 = clock::now();
  const Tensor logits = forward(prefill);
  const double seconds = std::chrono::duration<double>(clock::now() - t0).count();
  if (prefill) prompt_seconds_ = seconds;
  const int64_t vocab = model_.config.vocab_size;
  const int64_t last = logits.dim(0) - 1;
  return accept({logits.ptr() + last * vocab, static_cast<std::size_t>(vocab)},
                prefill ? 0.0 : seconds);
}

Tensor Decoding::forward(bool prefill) {
  if (prefill)
    return forward_cached(model_, adapters_, cache_, prompt(), CachedLogits::Last,
                          options_.decode_activations);
  const SpinTeamScope on_team(step_team_.get());
  return forward_cached(model_, adapters_, cache_, {&history_.back(), 1}, CachedLogits::Last,
                        options_.decode_activations);
}

std::optional<int32_t> Decoding::accept(std::span<const float> logits, double forward_seconds) {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const int32_t id = sampler_.sample(logits, history_);
  generate_seconds_ += forward_seconds + std::chrono::duration<double>(clock::now() - t0).count();
  if (std::find(options_.stop_ids.begin(), options_.stop_ids.end(), id) !=
      options_.stop_ids.end()) {
    stop_reason_ = "stop_token";
    return std::nullopt;
  }
  history_.push_back(id);
  return id;
}

}  // namespace lora
