// One sequence being generated a step at a time over the KV-cached forward. It owns its cache and
// sampler, so several can run side by side over one model (the server interleaves them).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autograd/spin_team.h"
#include "trainer/sampler.h"
#include "trainer/transformer.h"

namespace lora {

struct GenerateOptions {
  int64_t max_tokens = 100;
  KVCacheType kv_cache = KVCacheType::F32;
  // Int8: decode steps round x to 8 bits per group for the quantized weights that have integer
  // kernels, as llama.cpp does for every quantized model. On AVX2 such a step runs 1.5-2x faster
  // than with f32 x, and the rounding is far below the weights' own 4-bit error; F32 keeps each
  // product the exact one of the dequantized weights (what mlx-lm computes).
  GemvActivations decode_activations = GemvActivations::Int8;
  SamplingOptions sampling;
  std::vector<int32_t> stop_ids;  // generation ends after one of these (it is not emitted)
};

class Decoding {
 public:
  // `adapters` is copied: it must stay valid (the adapters it points at) while this runs.
  Decoding(const Model& model, AdapterStack adapters, std::vector<int32_t> prompt,
           const GenerateOptions& options);
  // The next generated id (the first call runs the prompt), or nullopt once finished.
  std::optional<int32_t> next();
  bool finished() const { return !stop_reason_.empty(); }
  // Ends generation early (the caller found a stop string, or its reader left).
  void finish(const std::string& reason) { stop_reason_ = reason; }
  const std::string& stop_reason() const { return stop_reason_; }  // empty while running
  std::span<const int32_t> prompt() const { return {history_.data(), prompt_size_}; }
  std::span<const int32_t> tokens() const {
    return std::span<const int32_t>(history_).subspan(prompt_size_);
  }
  double prompt_seconds() const { return prompt_seconds_; }
  double generate_seconds() const { return generate_seconds_; }
  const Model& model() const { return model_; }
  const GenerateOptions& options() const { return options_; }

  // Stepping several sequences in one batched pass (trainer/batched_decode.h) splits next() in
  // two: the one-token forward, batched, then each sequence's sampling.
  // True when the next id comes from a one-token step (the prompt has run and the sequence goes
  // on); false once finished, which hitting max_tokens here makes it.
  bool decode_due();
  DecodeRow decode_row() { return {&adapters_, &cache_, history_.back()}; }
  // Samples the next id from this step's logits [vocab]; `forward_seconds` is the step's forward.
  std::optional<int32_t> accept(std::span<const float> logits, double forward_seconds);

 private:
  bool below_max_tokens();  // false (and finished) once max_tokens are generated
  Tensor forward(bool prefill);

  const Model& model_;
  AdapterStack adapters_;
  GenerateOptions options_;
  Sampler sampler_;
  KVCache cache_;
  std::vector<int32_t> history_;  // prompt, then the generated ids
  std::size_t prompt_size_ = 0;
  // One-token steps open a few hundred loops too short for OpenMP's regions: this team hands them
  // out instead (none where it would not fit the cores). The prompt stays on OpenMP's team.
  std::unique_ptr<SpinTeam> step_team_;
  std::string stop_reason_;
  double prompt_seconds_ = 0, generate_seconds_ = 0;
};

}  // namespace lora
