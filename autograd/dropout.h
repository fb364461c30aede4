// Inverted dropout whose mask is a pure function of (seed, element index): the same seed gives
// the same mask in the forward pass, in the backward pass and in a checkpoint's recomputation.
#pragma once
#include <cstdint>
#include <span>

namespace lora::ag {

// True when element `index` survives dropout with drop probability p under `seed`.
bool dropout_keeps(uint64_t seed, uint64_t index, float p);
// out[i] = keeps(i) ? in[i] / (1 - p) : 0.
void apply_dropout(std::span<const float> in, float p, uint64_t seed, std::span<float> out);

}  // namespace lora::ag
