// Backward of one LoRA branch's rank-r products in one pass over the tokens:
//   su  = scale * u          [n, r], u = x A^T (given, or formed here from the cached x block)
//   gu  = scale * g B        [n, r]
//   dB += su^T g             [out, r] (kept transposed, [r, out], while accumulating)
//   dA += gu^T x             [r, in]
// g is [n, out], x (the branch input) [n, in], A [r, in], B [out, r]. A BLAS sgemm per product
// reads g twice and x once more, and threads skinny products poorly; here each thread takes a
// contiguous run of tokens, reuses every block of g and x from cache for all of its products, and
// accumulates dA and dB in private buffers that are summed in thread order at the end (the result
// depends on the thread count, not on timing).
//
// The products are register-blocked over 8-float vectors (GCC/Clang vector extensions, so the
// same code is AVX2 in the baseline build and runs as such on every x86-64-v3 CPU): the rank-r
// dot products take two tokens and four ranks at a time over L1-resident column chunks (eight
// accumulators, six loads per eight FMAs), the outer-product sums four ranks and 24 columns
// (twelve accumulators, seven loads per twelve FMAs), where one-rank-at-a-time loops issued a
// load per FMA.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace lora::kernels {

namespace lora_detail {

typedef float vf8 __attribute__((vector_size(32)));

inline vf8 load8(const float* p) {
  vf8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store8(float* p, vf8 v) { std::memcpy(p, &v, sizeof v); }
inline float hsum8(vf8 v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// out[i * r + k] = scale * sum_{c < width} X[i * ldx + c] * M[k * width + c] for i < rows, k < r.
// The columns go in chunks of kDotChunk, so the chunk of M (r rows) stays in L1 while every token
// pair of the block runs over it; per-(token, rank) vector partial sums carry across chunks and
// are reduced once at the end. Taking M whole per token pair would stream it from L2 each time.
inline void rank_dots(const float* X, int64_t ldx, int64_t rows, const float* M, int64_t width,
                      int64_t r, float scale, float* out) {
  constexpr int64_t kDotChunk = 256;
  const int64_t vec_end = width / 8 * 8;
  std::vector<vf8> part(static_cast<std::size_t>(rows * r), vf8{});
  for (int64_t c0 = 0; c0 < vec_end; c0 += kDotChunk) {
    const int64_t c1 = std::min(vec_end, c0 + kDotChunk);
    int64_t i = 0;
    for (; i + 2 <= rows; i += 2) {
      const float* x0 = X + i * ldx;
      const float* x1 = x0 + ldx;
      int64_t k = 0;
      for (; k + 4 <= r; k += 4) {
        const float* m0 = M + k * width;
        vf8 a[2][4];
        for (int j = 0; j < 4; ++j)
          a[0][j] = part[i * r + k + j], a[1][j] = part[(i + 1) * r + k + j];
        for (int64_t c = c0; c < c1; c += 8) {
          const vf8 xa = load8(x0 + c), xb = load8(x1 + c);
          for (int j = 0; j < 4; ++j) {
            const vf8 m = load8(m0 + j * width + c);
            a[0][j] += xa * m;
            a[1][j] += xb * m;
          }
        }
        for (int j = 0; j < 4; ++j)
          part[i * r + k + j] = a[0][j], part[(i + 1) * r + k + j] = a[1][j];
      }
      for (; k < r; ++k)
        for (int64_t t = i; t < i + 2; ++t)
          for (int64_t c = c0; c < c1; c += 8)
            part[t * r + k] += load8(X + t * ldx + c) * load8(M + k * width + c);
    }
    for (; i < rows; ++i)
      for (int64_t k = 0; k < r; ++k)
        for (int64_t c = c0; c < c1; c += 8)
          part[i * r + k] += load8(X + i * ldx + c) * load8(M + k * width + c);
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t k = 0; k < r; ++k) {
      float s = hsum8(part[i * r + k]);
      for (int64_t c = vec_end; c < width; ++c) s += X[i * ldx + c] * M[k * width + c];
      out[i * r + k] = scale * s;
    }
}

// acc[k * cols + c] += sum_{i < rows} coef[i * r + k] * X[i * ldx + c] for k < r, c < cols.
template <int K, int V>
inline void outer_block(const float* coef, int64_t r, const float* X, int64_t ldx, int64_t rows,
                        float* acc, int64_t cols) {
  vf8 a[K][V];
  for (int j = 0; j < K; ++j)
    for (int v = 0; v < V; ++v) a[j][v] = load8(acc + j * cols + 8 * v);
  for (int64_t i = 0; i < rows; ++i) {
    vf8 x[V];
    for (int v = 0; v < V; ++v) x[v] = load8(X + i * ldx + 8 * v);
    for (int j = 0; j < K; ++j) {
      const float s = coef[i * r + j];
      const vf8 sv = {s, s, s, s, s, s, s, s};
      for (int v = 0; v < V; ++v) a[j][v] += sv * x[v];
    }
  }
  for (int j = 0; j < K; ++j)
    for (int v = 0; v < V; ++v) store8(acc + j * cols + 8 * v, a[j][v]);
}

inline void accumulate_outer(const float* coef, int64_t r, const float* X, int64_t ldx,
                             int64_t rows, int64_t cols, float* acc) {
  const int64_t vec_end = cols / 8 * 8;
  int64_t k = 0;
  for (; k + 4 <= r; k += 4) {
    int64_t c = 0;
    for (; c + 24 <= vec_end; c += 24)
      outer_block<4, 3>(coef + k, r, X + c, ldx, rows, acc + k * cols + c, cols);
    for (; c < vec_end; c += 8)
      outer_block<4, 1>(coef + k, r, X + c, ldx, rows, acc + k * cols + c, cols);
  }
  for (; k < r; ++k)
    for (int64_t c = 0; c < vec_end; c += 8)
      outer_block<1, 1>(coef + k, r, X + c, ldx, rows, acc + k * cols + c, cols);
  for (int64_t kk = 0; kk < r; ++kk)  // the columns past the last whole vector
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t c = vec_end; c < cols; ++c)
        acc[kk * cols + c] += coef[i * r + kk] * X[i * ldx + c];
}

// out[i * width + c] += scale * sum_k coef[i * r + k] * M[k * width + c] for i < rows: a column
// chunk of M (r rows) stays in L1 while every row of the block runs over it.
inline void rank_expand(const float* coef, int64_t rows, const float* M, int64_t width, int64_t r,
                        float scale, float* out) {
  constexpr int64_t kChunk = 256;
  const int64_t vec_end = width / 8 * 8;
  for (int64_t c0 = 0; c0 < vec_end; c0 += kChunk) {
    const int64_t c1 = std::min(vec_end, c0 + kChunk);
    for (int64_t i = 0; i < rows; ++i) {
      float* o = out + i * width;
      for (int64_t c = c0; c < c1; c += 8) {
        vf8 acc = load8(o + c);
        for (int64_t k = 0; k < r; ++k) {
          const float s = scale * coef[i * r + k];
          const vf8 sv = {s, s, s, s, s, s, s, s};
          acc += sv * load8(M + k * width + c);
        }
        store8(o + c, acc);
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

}  // namespace lora_detail

// The rank-r products of a branch that is not folded into the frozen weight, split over the
// threads by token blocks (a BLAS call with an inner or outer size of r threads poorly):
//   rank_project: out[n, r] = scale * X[n, width] M^T, M [r, width] (u = x A^T, gu = g B)
//   rank_expand:  out[n, width] += scale * coef[n, r] M, M [r, width] (y += s u B^T, dx += gu A)
inline void rank_project(const float* X, int64_t n, const float* M, int64_t width, int64_t r,
                         float scale, float* out) {
  constexpr int64_t kBlock = 32;
#pragma omp parallel for schedule(static) if (n * width * r >= (int64_t(1) << 18))
  for (int64_t i0 = 0; i0 < n; i0 += kBlock)
    lora_detail::rank_dots(X + i0 * width, width, std::min(kBlock, n - i0), M, width, r, scale,
                           out + i0 * r);
}

inline void rank_expand(const float* coef, int64_t n, const float* M, int64_t width, int64_t r,
                        float scale, float* out) {
  constexpr int64_t kBlock = 32;
#pragma omp parallel for schedule(static) if (n * width * r >= (int64_t(1) << 18))
  for (int64_t i0 = 0; i0 < n; i0 += kBlock)
    lora_detail::rank_expand(coef + i0 * r, std::min(kBlock, n - i0), M, width, r, scale,
                             out + i0 * width);
}

// M^T of a row-major [rows, cols] matrix, as [cols, rows] (B [out, r] -> B^T [r, out]).
inline std::vector<float> transposed(const float* m, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<std::size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = m[i * cols + j];
  return t;
}

// `u` may be null: then u = x A^T is formed a token block at a time from the x rows the block
// reads anyway (a branch folded into the frozen product never forms u in forward).
inline void lora_backward(const float* g, const float* x, const float* u, const float* A,
                          const float* B, int64_t n, int64_t in, int64_t out, int64_t r,
                          float scale, float* gu, float* dA, float* dB) {
  constexpr int64_t kBlock = 32;  // tokens per block: 32 rows of g and x stay in L2
  const std::vector<float> bt = transposed(B, out, r);  // gu's dots run along contiguous rows
  const int threads = n >= 4 * kBlock ? omp_get_max_threads() : 1;
  // Per thread: dB^T [r, out] then dA [r, in].
  const int64_t per_thread = r * (out + in);
  std::vector<float> acc(static_cast<std::size_t>(threads * per_thread), 0.0f);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    float* dbt = acc.data() + t * per_thread;
    float* da = dbt + r * out;
    std::vector<float> su(static_cast<std::size_t>(kBlock * r));
    for (int64_t i0 = begin; i0 < end; i0 += kBlock) {
      const int64_t rows = std::min(kBlock, end - i0);
      const float* gb = g + i0 * out;
      const float* xb = x + i0 * in;
      lora_detail::rank_dots(gb, out, rows, bt.data(), out, r, scale, gu + i0 * r);
      if (u) {
        for (int64_t i = 0; i < rows * r; ++i) su[i] = scale * u[i0 * r + i];
      } else {
        lora_detail::rank_dots(xb, in, rows, A, in, r, scale, su.data());
      }
      lora_detail::accumulate_outer(su.data(), r, gb, out, rows, out, dbt);
      lora_detail::accumulate_outer(gu + i0 * r, r, xb, in, rows, in, da);
    }
  }
  for (int t = 0; t < threads; ++t) {
    const float* dbt = acc.data() + t * per_thread;
    const float* da = dbt + r * out;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t k = 0; k < r; ++k) dB[o * r + k] += dbt[k * out + o];
    for (int64_t i = 0; i < r * in; ++i) dA[i] += da[i];
  }
}

}  // namespace lora::kernels
