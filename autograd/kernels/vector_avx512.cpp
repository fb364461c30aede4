// The softmax and SwiGLU loops in AVX-512, compiled with its flags (autograd/CMakeLists.txt) and
// called only when active_cpu_features() has it. Nothing here is inline from another header, and
// the one template from another (parallel_for) is instantiated only with this file's own lambdas,
// so no AVX-512 copy of shared code can replace the baseline one at link time.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "autograd/kernels/kernel_variants.h"
#include "autograd/parallel.h"

namespace lora::kernels::avx512 {
namespace {

constexpr int64_t kLanes = 16;
// Elements per split of the SwiGLU loops: one lane block per iteration made the call into each
// iteration a quarter of their time.
constexpr int64_t kChunk = 4096;
int64_t chunks_of(int64_t n) { return (n + kChunk - 1) / kChunk; }

// exp(x) = 2^k * e^r with k = round(x / ln 2) and |r| <= ln(2) / 2; e^r by its degree-6 Taylor
// polynomial; scalef applies 2^k. Below -87.33, where e^x is no longer a normal float, the lane is
// 0 by mask (so -inf gives 0) and never computed as an underflow: an underflowing scalef takes a
// microcode assist, which made the masked keys of attention rows cost several normal exps each.
// Relative error below 3e-7 on the range softmax uses (x <= 0).
__m512 exp16(__m512 x) {
  const __m512 lowest = _mm512_set1_ps(-87.33f);
  const __mmask16 normal = _mm512_cmp_ps_mask(x, lowest, _CMP_GE_OQ);
  x = _mm512_maskz_max_ps(__mmask16(0xFFFF), x, lowest);
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
  return _mm512_maskz_scalef_ps(normal, p, k);
}

// Horizontal reductions through memory (the _mm512_reduce_* helpers trip GCC 12's
// maybe-uninitialized warning).
float hmax16(__m512 v) {
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, v);
  float m = lanes[0];
  for (int i = 1; i < kLanes; ++i) m = lanes[i] > m ? lanes[i] : m;
  return m;
}
double hsum16(__m512 v) {
  alignas(64) float lanes[kLanes];
  _mm512_store_ps(lanes, v);
  double s = 0.0;
  for (float f : lanes) s += f;
  return s;
}

__m512 sigmoid16(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

__mmask16 tail_mask(int64_t left) { return static_cast<__mmask16>((1u << left) - 1u); }

}  // namespace

float max_of(const float* x, int64_t n) {
  __m512 vm = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    vm = _mm512_maskz_max_ps(__mmask16(0xFFFF), vm, _mm512_loadu_ps(x + i));
  if (i < n)
    vm = _mm512_mask_max_ps(vm, tail_mask(n - i), vm,
                            _mm512_maskz_loadu_ps(tail_mask(n - i), x + i));
  return hmax16(vm);
}

double exp_shift_sum(float* x, int64_t n, float shift) {
  const __m512 vs = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), vs));
    _mm512_storeu_ps(x + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  if (i < n) {
    const __mmask16 mask = tail_mask(n - i);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), vs));
    _mm512_mask_storeu_ps(x + i, mask, e);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(mask, e));
  }
  return hsum16(acc);
}

void swiglu_forward(const float* gate_in, const float* up_in, int64_t n, float* y_out) {
  parallel_for(chunks_of(n), n > (1 << 16), [=](int64_t c) {
    // Locals, not the captures: a masked store clobbers memory for GCC, which then reloads every
    // capture in every iteration (15-20% of these loops).
    const float *gate = gate_in, *up = up_in;
    float* y = y_out;
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; i += kLanes) {
      const __mmask16 m = n - i >= kLanes ? __mmask16(0xFFFF) : tail_mask(n - i);
      const __m512 g = _mm512_maskz_loadu_ps(m, gate + i);
      const __m512 u = _mm512_maskz_loadu_ps(m, up + i);
      _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(_mm512_mul_ps(g, sigmoid16(g)), u));
    }
  });
}

// d gate (+)= g * up * s * (1 + x * (1 - s)), d up (+)= g * x * s, s = sigmoid(gate).
void swiglu_backward(const float* gate_in, const float* up_in, const float* g_in, int64_t n,
                     float* dgate_out, float* dup_out, bool accumulate) {
  const __m512 one = _mm512_set1_ps(1.0f);
  parallel_for(chunks_of(n), n > (1 << 16), [=](int64_t c) {
    const float *gate = gate_in, *up = up_in, *g = g_in;  // locals: see swiglu_forward
    float *dgate = dgate_out, *dup = dup_out;
    const int64_t end = std::min(n, (c + 1) * kChunk);
    for (int64_t i = c * kChunk; i < end; i += kLanes) {
      const __mmask16 m = n - i >= kLanes ? __mmask16(0xFFFF) : tail_mask(n - i);
      const __m512 x = _mm512_maskz_loadu_ps(m, gate + i);
      const __m512 u = _mm512_maskz_loadu_ps(m, up + i);
      const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
      const __m512 s = sigmoid16(x);
      if (dgate) {
        const __m512 d = _mm512_mul_ps(
            _mm512_mul_ps(gv, u), _mm512_mul_ps(s, _mm512_fmadd_ps(x, _mm512_sub_ps(one, s), one)));
        const __m512 base = accumulate ? _mm512_maskz_loadu_ps(m, dgate + i) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(dgate + i, m, _mm512_add_ps(base, d));
      }
      if (dup) {
        const __m512 base = accumulate ? _mm512_maskz_loadu_ps(m, dup + i) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(dup + i, m, _mm512_fmadd_ps(_mm512_mul_ps(gv, x), s, base));
      }
    }
  });
}

}  // namespace lora::kernels::avx512
