// The LoRA rank-r loops (kernel_variants.h's LoraLoops), written once over W float lanes
// (GCC/Clang vector extensions) and compiled once per instruction set: kernels/lora_avx2.cpp
// (W = 8) and kernels/lora_avx512.cpp (W = 16), each with its own -m flags. Everything here has
// internal linkage and uses no template or inline function of another header (no std::vector, no
// std::min), so no AVX-512 copy of shared code can replace the baseline one at link time; the
// threads and buffers are kernels/lora_kernels.cpp's.
//
// The products are register-blocked: the rank-r dot products take two tokens and four ranks at a
// time over L1-resident column chunks (eight accumulators, six loads per eight FMAs), the
// outer-product sums four ranks and three vectors of columns (twelve accumulators, seven loads per
// twelve FMAs), where one-rank-at-a-time loops issued a load per FMA. The loops over those
// blocks carry `#pragma GCC unroll`: at -O2 GCC kept them rolled, with the accumulator arrays in
// stack memory and a load and a store around every FMA (the LoRA backward ran 1.6x slower).
#pragma once
#include <cstdint>
#include <cstring>

#include "autograd/kernels/kernel_variants.h"

namespace {

template <int W>
struct Lanes {
  typedef float type __attribute__((vector_size(4 * W)));
};
template <int W>
using vec = typename Lanes<W>::type;

template <int W>
vec<W> load(const float* p) {
  vec<W> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <int W>
void store(float* p, vec<W> v) {
  std::memcpy(p, &v, sizeof v);
}
template <int W>
float hsum(vec<W> v) {
  float s = 0.0f;
  for (int i = 0; i < W; ++i) s += v[i];
  return s;
}
template <int W>
vec<W> splat(float s) {
  return vec<W>{} + s;
}
int64_t smaller(int64_t a, int64_t b) { return a < b ? a : b; }

// out[i * r + k] = scale * sum_{c < width} X[i * ldx + c] * M[k * width + c] for i < rows, k < r.
// The columns go in chunks of kDotChunk, so the chunk of M (r rows) stays in L1 while every token
// pair of the block runs over it; per-(token, rank) vector partial sums carry across chunks and
// are reduced once at the end. Taking M whole per token pair would stream it from L2 each time.
// `part` (rows * r * W floats) holds those partial sums.
constexpr int64_t kLineFloats = 16;  // floats per 64-byte cache line

template <int W>
void rank_dots(const float* X, int64_t ldx, int64_t rows, const float* M, int64_t width, int64_t r,
               float scale, float* out, float* part_floats) {
  constexpr int64_t kDotChunk = 256;
  const int64_t vec_end = width / W * W;
  std::memset(part_floats, 0, sizeof(float) * static_cast<std::size_t>(rows * r * W));
  // Element-wise access through memcpy: the scratch is only float-aligned.
  struct Parts {
    float* at;
    vec<W> get(int64_t i) const { return load<W>(at + i * W); }
    void set(int64_t i, vec<W> v) const { store<W>(at + i * W, v); }
    void add(int64_t i, vec<W> v) const { set(i, get(i) + v); }
  } part{part_floats};
  for (int64_t c0 = 0; c0 < vec_end; c0 += kDotChunk) {
    const int64_t c1 = smaller(vec_end, c0 + kDotChunk);
    int64_t i = 0;
    for (; i + 2 <= rows; i += 2) {
      const float* x0 = X + i * ldx;
      const float* x1 = x0 + ldx;
      // The first rank group also asks for the next pair's chunk: each pass reads 1 KiB of a row
      // from memory and then jumps a whole row, and the hardware prefetcher alone left the loads
      // waiting (prefetching made the whole LoRA backward 20-25% faster).
      const bool next_pair = i + 3 < rows;
      int64_t k = 0;
      for (; k + 4 <= r; k += 4) {
        const float* m0 = M + k * width;
        vec<W> a[2][4];
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j)
          a[0][j] = part.get(i * r + k + j), a[1][j] = part.get((i + 1) * r + k + j);
        for (int64_t c = c0; c < c1; c += W) {
          if (next_pair && k == 0 && c % kLineFloats == 0) {
            __builtin_prefetch(x1 + ldx + c);
            __builtin_prefetch(x1 + 2 * ldx + c);
          }
          const vec<W> xa = load<W>(x0 + c), xb = load<W>(x1 + c);
#pragma GCC unroll 4
          for (int j = 0; j < 4; ++j) {
            const vec<W> m = load<W>(m0 + j * width + c);
            a[0][j] += xa * m;
            a[1][j] += xb * m;
          }
        }
#pragma GCC unroll 4
        for (int j = 0; j < 4; ++j)
          part.set(i * r + k + j, a[0][j]), part.set((i + 1) * r + k + j, a[1][j]);
      }
      for (; k < r; ++k)
        for (int64_t t = i; t < i + 2; ++t)
          for (int64_t c = c0; c < c1; c += W)
            part.add(t * r + k, load<W>(X + t * ldx + c) * load<W>(M + k * width + c));
    }
    for (; i < rows; ++i)
      for (int64_t k = 0; k < r; ++k)
        for (int64_t c = c0; c < c1; c += W)
          part.add(i * r + k, load<W>(X + i * ldx + c) * load<W>(M + k * width + c));
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < r; ++k) {
      float s = hsum<W>(part.get(i * r + k));
      for (int64_t c = vec_end; c < width; ++c) s += X[i * ldx + c] * M[k * width + c];
      out[i * r + k] = scale * s;
    }
}

// acc[k * cols + c] += sum_{i < rows} coef[i * r + k] * X[i * ldx + c] for k < K, c < V * W.
template <int W, int K, int V>
void outer_block(const float* coef, int64_t r, const float* X, int64_t ldx, int64_t rows,
                 float* acc, int64_t cols) {
  vec<W> a[K][V];
#pragma GCC unroll 16
  for (int j = 0; j < K; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) a[j][v] = load<W>(acc + j * cols + W * v);
  for (int64_t i = 0; i < rows; ++i) {
    vec<W> x[V];
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) x[v] = load<W>(X + i * ldx + W * v);
#pragma GCC unroll 16
    for (int j = 0; j < K; ++j) {
      const vec<W> s = splat<W>(coef[i * r + j]);
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) a[j][v] += s * x[v];
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < K; ++j)
#pragma GCC unroll 16
    for (int v = 0; v < V; ++v) store<W>(acc + j * cols + W * v, a[j][v]);
}

// acc[k * cols + c] += sum_{i < rows} coef[i * r + k] * X[i * ldx + c] for k < r, c < cols.
template <int W>
void accumulate_outer(const float* coef, int64_t r, const float* X, int64_t ldx, int64_t rows,
                      int64_t cols, float* acc) {
  const int64_t vec_end = cols / W * W;
  int64_t k = 0;
  for (; k + 4 <= r; k += 4) {
    int64_t c = 0;
    for (; c + 3 * W <= vec_end; c += 3 * W)
      outer_block<W, 4, 3>(coef + k, r, X + c, ldx, rows, acc + k * cols + c, cols);
    for (; c < vec_end; c += W)
      outer_block<W, 4, 1>(coef + k, r, X + c, ldx, rows, acc + k * cols + c, cols);
  }
  for (; k < r; ++k)
    for (int64_t c = 0; c < vec_end; c += W)
      outer_block<W, 1, 1>(coef + k, r, X + c, ldx, rows, acc + k * cols + c, cols);
  for (int64_t kk = 0; kk < r; ++kk)  // the columns past the last whole vector
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = vec_end; c < cols; ++c)
        acc[kk * cols + c] += coef[i * r + kk] * X[i * ldx + c];
}

// out[i * width + c] += scale * sum_k coef[i * r + k] * M[k * width + c] for i < rows: a column
// chunk of M (r rows) stays in L1 while every row of the block runs over it.
template <int W>
void rank_expand_rows(const float* coef, int64_t rows, const float* M, int64_t width, int64_t r,
                      float scale, float* out) {
  constexpr int64_t kChunk = 256;
  const int64_t vec_end = width / W * W;
  for (int64_t c0 = 0; c0 < vec_end; c0 += kChunk) {
    const int64_t c1 = smaller(vec_end, c0 + kChunk);
    for (int64_t i = 0; i < rows; ++i) {
      float* o = out + i * width;
      for (int64_t c = c0; c < c1; c += W) {
        vec<W> acc = load<W>(o + c);
        for (int64_t k = 0; k < r; ++k)
          acc += splat<W>(scale * coef[i * r + k]) * load<W>(M + k * width + c);
        store<W>(o + c, acc);
      }
    }
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t c = vec_end; c < width; ++c) {
      float acc = 0.0f;
      for (int64_t k = 0; k < r; ++k) acc += scale * coef[i * r + k] * M[k * width + c];
      out[i * width + c] += acc;
    }
}

template <int W>
constexpr lora::kernels::LoraLoops make_lora_loops() {
  return {W, &rank_dots<W>, &accumulate_outer<W>, &rank_expand_rows<W>};
}

}  // namespace
