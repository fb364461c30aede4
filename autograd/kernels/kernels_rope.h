// Rotary position embedding (the rotate_half convention of Hugging Face Llama): for i < half,
//   out[i]        = x[i] * cos - x[i + half] * sin
//   out[i + half] = x[i + half] * cos + x[i] * sin,  angle = position * inv_freq[i].
// Only the first 2 * half features of each head rotate (partial rotary); the rest are left as
// they are. With a scale s (LongRoPE's attention factor) cos and sin are s * cos, s * sin; the
// backward, the transposed map, is the same kernel with the sine negated.
#pragma once
#include <cmath>
#include <cstdint>
#include <span>
#include <vector>

#include "autograd/parallel.h"

namespace lora::kernels {

// cos/sin tables [seq, half] for positions pos_offset .. pos_offset + seq - 1. The angle is formed
// in f32 (position * inv_freq) as the reference implementation does, then widened.
struct RopeTable {
  std::vector<double> cos, sin;
  int64_t half = 0;
  RopeTable(std::span<const float> inv_freq, int64_t seq, int64_t pos_offset, float scale = 1.0f)
      : cos(static_cast<std::size_t>(seq) * inv_freq.size()),
        sin(static_cast<std::size_t>(seq) * inv_freq.size()),
        half(static_cast<int64_t>(inv_freq.size())) {
    // A training sequence's table is thousands of cos/sin calls, made for q and k of every
    // layer: split over the threads (the values do not depend on how).
    parallel_for(seq, seq * half >= 4096, [&](int64_t t) {
      for (int64_t i = 0; i < half; ++i) {
        const float angle = float(pos_offset + t) * inv_freq[i];
        cos[t * half + i] = double(scale) * std::cos(angle);
        sin[t * half + i] = double(scale) * std::sin(angle);
      }
    });
  }
};

// Rotates x [batch * seq, heads * head_dim] in place; direction -1 applies the inverse rotation.
template <typename T>
void rope_rotate(T* x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
                 const RopeTable& table, int direction = 1) {
  const int64_t half = table.half;
  parallel_for(batch * seq, batch * seq * heads * head_dim > (1 << 16), [&](int64_t row) {
    const int64_t t = row % seq;
    const double* c = table.cos.data() + t * half;
    const double* s = table.sin.data() + t * half;
    for (int64_t h = 0; h < heads; ++h) {
      T* v = x + row * heads * head_dim + h * head_dim;
      // Each i touches only v[i] and v[i + half]: vector lanes are safe, and -O2 does not use them
      // on its own.
#pragma omp simd
      for (int64_t i = 0; i < half; ++i) {
        const T cs = T(c[i]);
        const T sn = direction > 0 ? T(s[i]) : T(-s[i]);
        const T a = v[i], b = v[i + half];
        v[i] = a * cs - b * sn;
        v[i + half] = b * cs + a * sn;
      }
    }
  });
}

}  // namespace lora::kernels
