// Vectorized exp for the softmax loops (the fused loss head evaluates vocab-many exps per token,
// which scalar std::exp would make as costly as the head's matmul). AVX-512 when compiled for
// it, std::exp otherwise; relative error below 3e-7 on the range softmax uses (x <= 0), and
// exp(-inf) is 0.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace lora::kernels {

#if defined(__AVX512F__)
// exp(x) = 2^k * e^r with k = round(x / ln 2) and |r| <= ln(2) / 2; e^r by its degree-6 Taylor
// polynomial; scalef applies 2^k and saturates to 0 far below the f32 range (so -inf gives 0).
inline __m512 exp16(__m512 x) {
  x = _mm512_maskz_max_ps(__mmask16(0xFFFF), x, _mm512_set1_ps(-110.0f));
  x = _mm512_maskz_min_ps(__mmask16(0xFFFF), x, _mm512_set1_ps(88.7f));
  // The maskz forms: GCC 12 warns about the undefined pass-through of the unmasked ones.
  const __m512 k = _mm512_maskz_roundscale_ps(__mmask16(0xFFFF),
                                              _mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f)),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_maskz_scalef_ps(__mmask16(0xFFFF), p, k);
}
// Horizontal reductions through memory (the _mm512_reduce_* helpers trip GCC 12's
// maybe-uninitialized warning).
inline float hmax16(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float m = lanes[0];
  for (int i = 1; i < 16; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}
inline double hsum16(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  double s = 0.0;
  for (float f : lanes) s += f;
  return s;
}
#endif

// max(x[0..n)), -inf for n == 0.
inline float max_of(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
#if defined(__AVX512F__)
  __m512 vm = _mm512_set1_ps(m);
  for (; i + 16 <= n; i += 16)
    vm = _mm512_maskz_max_ps(__mmask16(0xFFFF), vm, _mm512_loadu_ps(x + i));
  m = hmax16(vm);
#endif
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// x[i] = exp(x[i] - shift) in place; returns the sum of the results (accumulated in f32 lanes,
// then in double).
inline double exp_shift_sum(float* x, int64_t n, float shift) {
  double sum = 0.0;
  int64_t i = 0;
#if defined(__AVX512F__)
  const __m512 vs = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1u);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), vs));
    _mm512_mask_storeu_ps(x + i, mask, e);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(mask, e));
    i = n;
  }
  sum = hsum16(acc);
#endif
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - shift);
    sum += x[i];
  }
  return sum;
}

}  // namespace lora::kernels
