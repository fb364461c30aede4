#include "autograd/dropout.h"

#include <stdexcept>

#include "autograd/parallel.h"

namespace lora::ag {
namespace {

// SplitMix64's finalizer: a cheap, well-mixed hash of a 64-bit counter.
uint64_t mix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

bool dropout_keeps(uint64_t seed, uint64_t index, float p) {
  const uint64_t h = mix64(mix64(seed) ^ index);
  const double u = double(h >> 11) * 0x1.0p-53;  // uniform in [0, 1)
  return u >= double(p);
}

void apply_dropout(std::span<const float> in, float p, uint64_t seed, std::span<float> out) {
  if (p < 0.0f || p >= 1.0f)
    throw std::invalid_argument("dropout probability must be in [0, 1), got " + std::to_string(p));
  if (out.size() != in.size()) throw std::invalid_argument("apply_dropout: size mismatch");
  const float keep_scale = 1.0f / (1.0f - p);
  parallel_for(static_cast<int64_t>(in.size()), in.size() > (1u << 16), [&](int64_t i) {
    const auto at = static_cast<std::size_t>(i);
    out[at] = dropout_keeps(seed, at, p) ? in[at] * keep_scale : 0.0f;
  });
}

}  // namespace lora::ag
