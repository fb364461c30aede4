// The softmax and SwiGLU loops in AVX2+FMA, compiled with exactly those flags
// (autograd/CMakeLists.txt): the copy every x86-64-v3 CPU runs, and the one LORA_CPU=avx2 picks.
// Nothing here is inline from another header, and its one template from another (parallel_for)
// takes only this file's own lambdas (see vector_avx512.cpp).
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "autograd/kernels/kernel_variants.h"
#include "autograd/parallel.h"

namespace lora::kernels::avx2 {
namespace {

constexpr int64_t kLanes = 8;
// Elements per split of the SwiGLU loops: one lane block per iteration made the call into each
// iteration a quarter of their time.
constexpr int64_t kChunk = 4096;
int64_t chunks_of(int64_t n) { return (n + kChunk - 1) / kChunk; }

// exp(x) = 2^k * e^r as in the AVX-512 copy, with 2^k built in the exponent field: x is clamped to
// [ln(FLT_MIN), 88.3] so k stays a normal exponent, and below ln(FLT_MIN) (-inf included) the
// result is 0 (denormal results are flushed; softmax never needs them).
__m256 exp8(__m256 x) {
  const __m256 lowest = _mm256_set1_ps(-87.33f);
  const __m256 underflow = _mm256_cmp_ps(x, lowest, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lowest), _mm256_set1_ps(88.3f));
  const __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504089f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127));
  const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
  return _mm256_andnot_ps(underflow, _mm256_mul_ps(p, scale));
}

float hmax8(__m256 v) {
  alignas(32) float lanes[kLanes];
  _mm256_store_ps(lanes, v);
  float m = lanes[0];
  for (int i = 1; i < kLanes; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}
double hsum8(__m256 v) {
  alignas(32) float lanes[kLanes];
  _mm256_store_ps(lanes, v);
  double s = 0.0;
  for (float f : lanes) s += f;
  return s;
}

__m256 sigmoid8(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

// Lanes [0, left) set (all of them for left >= 8), for maskload/maskstore.
__m256i tail_mask(int64_t left) {
  const int32_t l = left >= kLanes ? int32_t(kLanes) : int32_t(left);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(l), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace

float max_of(const float* x, int64_t n) {
  __m256 vm = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
  float m = hmax8(vm);
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

double exp_shift_sum(float* x, int64_t n, float shift) {
  const __m256 vs = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vs));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (i < n) {
    const __m256i mask = tail_mask(n - i);
    const __m256 e = _mm256_and_ps(exp8(_mm256_sub_ps(_mm256_maskload_ps(x + i, mask), vs)),
                                   _mm256_castsi256_ps(mask));
    _mm256_maskstore_ps(x + i, mask, e);
    acc = _mm256_add_ps(acc, e);
  }
  return hsum8(acc);
}

void swiglu_forward(const float* gate_in, const float* up_in, int64_t n, float* y_out) {
  parallel_for(chunks_of(n), n > (1 << 16), [=](int64_t c) {
    // Locals, not the captures: a masked store clobbers memory for GCC, which then reloads every
    // capture in every iteration (15-20% of these loops).
    const float *gate = gate_in, *up = up_in;
    float* y = y_out;
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; i += kLanes) {
      const __m256i m = tail_mask(n - i);
      const __m256 g = _mm256_maskload_ps(gate + i, m);
      const __m256 u = _mm256_maskload_ps(up + i, m);
      _mm256_maskstore_ps(y + i, m, _mm256_mul_ps(_mm256_mul_ps(g, sigmoid8(g)), u));
    }
  });
}

// d gate (+)= g * up * s * (1 + x * (1 - s)), d up (+)= g * x * s, s = sigmoid(gate).
void swiglu_backward(const float* gate_in, const float* up_in, const float* g_in, int64_t n,
                     float* dgate_out, float* dup_out, bool accumulate) {
  const __m256 one = _mm256_set1_ps(1.0f);
  parallel_for(chunks_of(n), n > (1 << 16), [=](int64_t c) {
    const float *gate = gate_in, *up = up_in, *g = g_in;  // locals: see swiglu_forward
    float *dgate = dgate_out, *dup = dup_out;
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; i += kLanes) {
      const __m256i m = tail_mask(n - i);
      const __m256 x = _mm256_maskload_ps(gate + i, m);
      const __m256 u = _mm256_maskload_ps(up + i, m);
      const __m256 gv = _mm256_maskload_ps(g + i, m);
      const __m256 s = sigmoid8(x);
      if (dgate) {
        const __m256 d = _mm256_mul_ps(
            _mm256_mul_ps(gv, u), _mm256_mul_ps(s, _mm256_fmadd_ps(x, _mm256_sub_ps(one, s), one)));
        const __m256 base = accumulate ? _mm256_maskload_ps(dgate + i, m) : _mm256_setzero_ps();
        _mm256_maskstore_ps(dgate + i, m, _mm256_add_ps(base, d));
      }
      if (dup) {
        const __m256 base = accumulate ? _mm256_maskload_ps(dup + i, m) : _mm256_setzero_ps();
        _mm256_maskstore_ps(dup + i, m, _mm256_fmadd_ps(_mm256_mul_ps(gv, x), s, base));
      }
    }
  });
}

}  // namespace lora::kernels::avx2
