// A decode step's attention loops over the KV cache (gemv::CachedHeadsArgs), written once over the
// vector type V of kernels_gemv.h and compiled per instruction set with it. The query heads that
// share one KV head go together, so each cached key and value is read from memory once per step
// for all of them, not once per head.
//
// Scores: a block of W keys against one head at a time, one accumulator per key, the head's query
// held in registers; V::sum_each then turns the W accumulators into the W scores in one
// transposing reduction instead of W horizontal sums. Values: one head's output row held in
// registers (a long head in slabs of 8 vectors) while the block's probability-weighted values are
// added into it. Blocks are short enough (kCachedBlock keys) for their keys or values to stay in
// L1 while every head reads them.
//
// The cache may hold IEEE halves (CachedHeadsArgs::half_keys): each key and value is then widened
// as it is loaded, and the step reads half the bytes.
//
// V provides, beyond kernels_gemv.h's list: sum_each(const reg (&v)[W]) (lane i: the sum of v[i]'s
// lanes) and load_half(const uint16_t*) (W halves widened).
#pragma once
#include <algorithm>
#include <cstdint>

#include "autograd/kernels/gemv_isa.h"
#include "autograd/kernels/kernels_prefetch.h"

namespace {

using lora::gemv::CachedHeadsArgs;

inline constexpr int64_t kCachedBlock = 64;
// The register arrays' loops unrolled whole: GCC at -O2 keeps an array indexed in a loop on the
// stack, a store and a reload per multiply-add.
#define LORA_GEMV_UNROLL_ALL _Pragma("GCC unroll 16")

template <class V>
typename V::reg load_cached(const float* p) {
  return V::load(p);
}
template <class V>
typename V::reg load_cached(const uint16_t* p) {
  return V::load_half(p);
}

// Scores of one head against keys j0 .. j0 + n - 1 (n <= W) of `keys` (float or half). C: the
// head's vectors, or 0 for a count known only at run time.
template <class V, int C, class E>
void score_keys(const CachedHeadsArgs& a, const E* keys, const float* qh, int64_t j0, int n,
                float scale, float* to) {
  constexpr int W = V::W;
  const int64_t chunks = C > 0 ? C : a.head_dim / W;
  typename V::reg q[C > 0 ? C : 1], acc[W];
  if constexpr (C > 0) {
    LORA_GEMV_UNROLL_ALL for (int c = 0; c < C; ++c) q[c] = V::load(qh + c * W);
  }
  LORA_GEMV_UNROLL_ALL for (int i = 0; i < W; ++i) {
    acc[i] = V::zero();
    if (i >= n) continue;
    const E* key = keys + (j0 + i) * a.kv_stride;
    LORA_GEMV_UNROLL_ALL for (int64_t c = 0; c < chunks; ++c) acc[i] =
        V::fmadd(C > 0 ? q[c] : V::load(qh + c * W), load_cached<V>(key + c * W), acc[i]);
  }
  const auto scores = V::mul(V::sum_each(acc), V::set1(scale));
  if constexpr (W > 1) {
    if (n < W) {
      float lanes[W];
      V::store(lanes, scores);
      std::copy_n(lanes, n, to);
      return;
    }
  }
  V::store(to, scores);
}

// Pulls the rows of the keys or values in [j0, j1) toward the cache: a head's part of a cached row
// is a few lines out of every row of all heads, a stride the hardware prefetcher follows poorly.
template <class E>
void prefetch_rows(const E* rows, int64_t stride, int64_t head_dim, int64_t j0, int64_t j1) {
  constexpr int64_t kPerLine = 64 / sizeof(E);
  for (int64_t j = j0; j < j1; ++j)
    for (int64_t c = 0; c < head_dim; c += kPerLine) prefetch_line(rows + j * stride + c);
}

template <class V, int C, class E>
void cached_scores_with(const CachedHeadsArgs& a, const E* keys, int64_t first, int64_t count,
                        float scale) {
  constexpr int W = V::W;
  for (int64_t b0 = first; b0 < count; b0 += kCachedBlock) {
    const int64_t b1 = std::min(count, b0 + kCachedBlock);
    prefetch_rows(keys, a.kv_stride, a.head_dim, b1, std::min(a.cached, b1 + kCachedBlock));
    for (int64_t h = 0; h < a.heads; ++h)
      for (int64_t j = b0; j < b1; j += W)
        score_keys<V, C>(a, keys, a.q + h * a.head_dim, j,
                         static_cast<int>(std::min<int64_t>(W, b1 - j)), scale,
                         a.scores + h * a.ld + j);
  }
}

// o[c] += sum_j p[j] * values[j * stride + c] for c < C vectors, j in [j0, j1): the C output
// vectors held in registers over the keys.
template <class V, int C, class E>
void weighted_slab(const E* values, int64_t stride, const float* p, int64_t j0, int64_t j1,
                   float* o) {
  constexpr int W = V::W;
  typename V::reg acc[C];
  LORA_GEMV_UNROLL_ALL for (int c = 0; c < C; ++c) acc[c] = V::load(o + c * W);
  for (int64_t j = j0; j < j1; ++j) {
    const auto pj = V::set1(p[j]);
    const E* value = values + j * stride;
    LORA_GEMV_UNROLL_ALL for (int c = 0; c < C; ++c) acc[c] =
        V::fmadd(pj, load_cached<V>(value + c * W), acc[c]);
  }
  LORA_GEMV_UNROLL_ALL for (int c = 0; c < C; ++c) V::store(o + c * W, acc[c]);
}

// out[h * head_dim + c] += sum_j scores[h * ld + j] * values[j * kv_stride + c], j in [j0, j1). A
// head longer than the registers hold (C = 0) goes in slabs of 8 vectors, the block's values read
// again from L1 for each.
template <class V, int C, class E>
void add_weighted_values(const CachedHeadsArgs& a, const E* values, int64_t h, int64_t j0,
                         int64_t j1, float* out) {
  constexpr int W = V::W;
  float* o = out + h * a.head_dim;
  const float* p = a.scores + h * a.ld;
  if constexpr (C > 0) return weighted_slab<V, C>(values, a.kv_stride, p, j0, j1, o);
  int64_t c = 0;
  for (; c + 8 * W <= a.head_dim; c += 8 * W)
    weighted_slab<V, 8>(values + c, a.kv_stride, p, j0, j1, o + c);
  for (; c < a.head_dim; c += W) weighted_slab<V, 1>(values + c, a.kv_stride, p, j0, j1, o + c);
}

template <class V, int C, class E>
void cached_values_with(const CachedHeadsArgs& a, const E* values, int64_t first, int64_t count,
                        float* out) {
  for (int64_t b0 = first; b0 < count; b0 += kCachedBlock) {
    const int64_t b1 = std::min(count, b0 + kCachedBlock);
    prefetch_rows(values, a.kv_stride, a.head_dim, b1, std::min(a.cached, b1 + kCachedBlock));
    for (int64_t h = 0; h < a.heads; ++h) add_weighted_values<V, C>(a, values, h, b0, b1, out);
  }
}

// Calls F<C> with C the head's vector count where that is small enough to hold, else F<0>.
template <class V, template <class, int> class F, class... Args>
void with_held_chunks(const CachedHeadsArgs& a, Args... args) {
  switch (a.head_dim / V::W) {
    case 1:
      return F<V, 1>::run(a, args...);
    case 2:
      return F<V, 2>::run(a, args...);
    case 4:
      return F<V, 4>::run(a, args...);
    case 5:
      return F<V, 5>::run(a, args...);
    case 6:
      return F<V, 6>::run(a, args...);
    case 8:
      return F<V, 8>::run(a, args...);
    default:
      return F<V, 0>::run(a, args...);
  }
}
template <class V, int C>
struct ScoresWith {
  static void run(const CachedHeadsArgs& a, int64_t first, int64_t count, float scale) {
    if (a.half_keys) return cached_scores_with<V, C>(a, a.half_keys, first, count, scale);
    cached_scores_with<V, C>(a, a.keys, first, count, scale);
  }
};
template <class V, int C>
struct ValuesWith {
  static void run(const CachedHeadsArgs& a, int64_t first, int64_t count, float* out) {
    if (a.half_values) return cached_values_with<V, C>(a, a.half_values, first, count, out);
    cached_values_with<V, C>(a, a.values, first, count, out);
  }
};

template <class V>
void cached_scores(const CachedHeadsArgs& a, int64_t first, int64_t count, float scale) {
  with_held_chunks<V, ScoresWith>(a, first, count, scale);
}
template <class V>
void cached_values(const CachedHeadsArgs& a, int64_t first, int64_t count, float* out) {
  // A head of 16 vectors (256 floats on AVX-512) still fits the registers as an output row alone
  // (the scores' query and accumulators together would not).
  if (V::W >= 16 && a.head_dim == 16 * V::W) return ValuesWith<V, 16>::run(a, first, count, out);
  with_held_chunks<V, ValuesWith>(a, first, count, out);
}

}  // namespace
