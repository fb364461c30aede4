// Backward of one LoRA branch's rank-r products in one pass over the tokens:
//   gu  = scale * g B        [n, r]
//   dB += scale * g^T u      [out, r]
//   dA += gu^T x             [r, in]
// g is [n, out], x (the branch input) [n, in], u = x A^T [n, r], B [out, r]. A BLAS sgemm per
// product reads g twice and x once more, and threads skinny products poorly; here each thread
// takes a contiguous run of tokens, reuses every block of g and x from cache for all of its
// products, and accumulates dA and dB in private buffers that are summed in thread order at the
// end (the result depends on the thread count, not on timing).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace lora::kernels {

namespace lora_detail {

// acc[k][c] += sum_{i < rows} coef[i * r + k] * rows_data[i * ld + c], c < cols: a rank-r outer
// product accumulation, 64 columns (4 AVX-512 registers) at a time so the partial sums of one
// column chunk stay in registers across the token block.
inline void accumulate_outer(const float* coef, int64_t r, const float* rows_data, int64_t ld,
                             int64_t rows, int64_t cols, float* acc) {
  constexpr int64_t kChunk = 64;
  for (int64_t k = 0; k < r; ++k) {
    float* a = acc + k * cols;
    int64_t c0 = 0;
    for (; c0 + kChunk <= cols; c0 += kChunk) {
      float part[kChunk];
      for (int64_t c = 0; c < kChunk; ++c) part[c] = a[c0 + c];
      for (int64_t i = 0; i < rows; ++i) {
        const float s = coef[i * r + k];
        const float* row = rows_data + i * ld + c0;
#pragma omp simd
        for (int64_t c = 0; c < kChunk; ++c) part[c] += s * row[c];
      }
      for (int64_t c = 0; c < kChunk; ++c) a[c0 + c] = part[c];
    }
    for (int64_t i = 0; i < rows; ++i) {
      const float s = coef[i * r + k];
      const float* row = rows_data + i * ld;
      for (int64_t c = c0; c < cols; ++c) a[c] += s * row[c];
    }
  }
}

}  // namespace lora_detail

inline void lora_backward(const float* g, const float* x, const float* u, const float* B, int64_t n,
                          int64_t in, int64_t out, int64_t r, float scale, float* gu, float* dA,
                          float* dB) {
  constexpr int64_t kBlock = 32;  // tokens per block: 32 rows of g stay in L2 for both products
  // B^T [r, out]: gu's dot products run along contiguous rows.
  std::vector<float> bt(static_cast<std::size_t>(r * out));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < r; ++k) bt[k * out + o] = B[o * r + k];
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
      for (int64_t i = 0; i < rows; ++i) {
        for (int64_t k = 0; k < r; ++k) {
          const float* brow = bt.data() + k * out;
          const float* grow = gb + i * out;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t o = 0; o < out; ++o) s += grow[o] * brow[o];
          gu[(i0 + i) * r + k] = scale * s;
          su[i * r + k] = scale * u[(i0 + i) * r + k];
        }
      }
      lora_detail::accumulate_outer(su.data(), r, gb, out, rows, out, dbt);
      lora_detail::accumulate_outer(gu + i0 * r, r, x + i0 * in, in, rows, in, da);
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
