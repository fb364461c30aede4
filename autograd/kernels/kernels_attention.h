// Causal grouped-query attention that never stores a [seq, seq] matrix: queries go in blocks of
// rows, and a block of every query head that shares one KV head is stacked into one matrix; its
// scores against every key the block may see are one GEMM into a per-thread scratch
// [stacked rows, seq_k], softmaxed in place and multiplied by V in a second GEMM. Only
// the per-row log-sum-exp is kept; the backward recomputes the block's probabilities from it (the
// FlashAttention recurrence, a query block at a time) and forms dV, dP, dQ, dK as four GEMMs.
// The products run on BLAS (single-threaded inside our OpenMP region: the OpenMP OpenBLAS build
// does not nest), so each reaches sgemm speed instead of one dot product per (query, key) pair.
#pragma once
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "autograd/kernels/gemv_isa.h"
#include "autograd/kernels/kernels_exp.h"
#include "autograd/parallel.h"

namespace lora::kernels {

struct AttentionShape {
  int64_t batch = 1;
  int64_t seq_q = 1;  // query rows per sequence
  // Key rows per sequence (>= seq_q); query t sits at key position seq_k - seq_q + t.
  int64_t seq_k = 1;
  int64_t heads = 1;
  int64_t kv_heads = 1;
  int64_t head_dim = 1;
  // Sliding window: query at key position p sees keys p - window + 1 .. p (0 = no window).
  int64_t window = 0;
  double scale = 0;    // score scale; 0 = 1 / sqrt(head_dim)
  double softcap = 0;  // scores become softcap * tanh(scores / softcap) (Gemma 2); 0 = off
  int64_t group() const { return heads / kv_heads; }
  double score_scale() const { return scale > 0 ? scale : 1.0 / std::sqrt(double(head_dim)); }
  int64_t q_stride() const { return heads * head_dim; }
  int64_t kv_stride() const { return kv_heads * head_dim; }
};

// Small problems (tests, single-token decoding of tiny models) run on the calling thread: waking
// the OpenMP team costs more than the work.
inline bool parallel_worth_it(const AttentionShape& s) {
  return s.batch * s.heads * s.seq_q * s.seq_k * s.head_dim > (int64_t(1) << 15);
}

// Query rows per block at most: 64 keeps the causal waste (the part of the block's key range above
// the diagonal) at 1/16 of the work for 512 tokens.
inline constexpr int64_t kQueryBlock = 64;

namespace attention_detail {

// Row-major C = alpha * op(A) op(B) + beta * C in the element type (tests check in double).
inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                 int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m),
              int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}
inline void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha, const double* a,
                 int64_t lda, const double* b, int64_t ldb, double beta, double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, int(m),
              int(n), int(k), alpha, a, int(lda), b, int(ldb), beta, c, int(ldc));
}

inline float row_max(const float* x, int64_t n) { return max_of(x, n); }
inline double row_max(const double* x, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, x[i]);
  return m;
}
// x[i] = exp(x[i] - shift); returns the sum.
inline double exp_shift(float* x, int64_t n, float shift) { return exp_shift_sum(x, n, shift); }
inline double exp_shift(double* x, int64_t n, double shift) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - shift));
  return sum;
}

// Hides what query row t (of sequence b) may not see in its score row: keys that fell out of the
// sliding window and padded keys become -inf, and keys at or past `limit` (the causal bound) get
// their probability, 0, at once: the softmax passes run over the prefix only. Returns `limit`.
template <typename T>
int64_t mask_row(T* row, const AttentionShape& s, int64_t b, int64_t t, int64_t count,
                 const uint8_t* key_valid) {
  const int64_t limit = s.seq_k - s.seq_q + t + 1;
  constexpr T hidden = -std::numeric_limits<T>::infinity();
  std::fill(row + limit, row + count, T(0));
  if (s.window > 0) std::fill(row, row + std::max<int64_t>(0, limit - s.window), hidden);
  if (key_valid)
    for (int64_t j = 0; j < limit; ++j)
      if (!key_valid[b * s.seq_k + j]) row[j] = hidden;
  return limit;
}

// Gemma 2's logit soft-capping, in place: x -> cap * tanh(x / cap). With `slope` it also stores
// the derivative 1 - tanh^2 that the backward multiplies the score gradients by.
template <typename T>
void soft_cap(T* row, int64_t n, double cap, T* slope) {
  for (int64_t j = 0; j < n; ++j) {
    const T th = T(std::tanh(double(row[j]) / cap));
    row[j] = T(cap) * th;
    if (slope) slope[j] = T(1) - th * th;
  }
}

// A score row's softmax over the keys query t (of sequence b) may see: capped, masked and
// exponentiated from its maximum in place, not yet divided by the sum. Returns the log-sum-exp
// and 1 / sum; a row with no visible key comes back zero, with -inf and 0.
template <typename T>
struct RowSoftmax {
  T lse, inv;
  int64_t limit;  // past the causal bound, the row is zero
};
template <typename T>
RowSoftmax<T> exp_row(T* row, const AttentionShape& s, int64_t b, int64_t t, int64_t count,
                      const uint8_t* key_valid) {
  if (s.softcap > 0) soft_cap(row, count, s.softcap, static_cast<T*>(nullptr));
  const int64_t limit = mask_row(row, s, b, t, count, key_valid);
  const T mx = row_max(row, limit);
  if (mx == -std::numeric_limits<T>::infinity()) {
    std::fill(row, row + count, T(0));
    return {mx, T(0), limit};
  }
  const double sum = exp_shift(row, limit, mx);  // exp(-inf) = 0 where hidden
  return {mx + T(std::log(sum)), T(1.0 / sum), limit};
}

// A backward's probabilities from a score row and its forward log-sum-exp: capped (the cap's
// slope into `slope`, given where the scores are capped), masked, exp(score - lse). A row that saw
// no key is zeroed, and false returned.
template <typename T>
bool probability_row(T* row, const AttentionShape& s, int64_t b, int64_t t, int64_t count,
                     const uint8_t* key_valid, T row_lse, T* slope) {
  if (row_lse == -std::numeric_limits<T>::infinity()) {
    std::fill(row, row + count, T(0));
    return false;
  }
  if (s.softcap > 0) soft_cap(row, count, s.softcap, slope);
  exp_shift(row, mask_row(row, s, b, t, count, key_valid), row_lse);
  return true;
}

// g . out over one head's row: the softmax backward's shift, delta = rowsum(P * dP).
template <typename T>
T row_dot(const T* g, const T* out, int64_t n) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t c = 0; c < n; ++c) acc += g[c] * out[c];
  return acc;
}

// Keys visible to some row of the query block starting at t0 with `rows` rows.
inline int64_t block_keys(const AttentionShape& s, int64_t t0, int64_t rows) {
  return s.seq_k - s.seq_q + t0 + rows;
}

// Query heads stacked per block: all of a KV group's, whose GEMMs then share one packing of K and
// V and run on stacked-rows-by-keys operands (Qwen2.5-0.5B: 7 heads, attention 15-20% faster
// than a GEMM per head). A decode step has one query row: there stacking would leave fewer work
// items than threads (one per KV head), so each head goes alone.
inline int64_t heads_per_stack(const AttentionShape& s) { return s.seq_q >= 16 ? s.group() : 1; }

// Query rows per block: about kStackedRows stacked rows keep the products near sgemm speed, and
// fewer query rows per block keep the causal waste small.
inline int64_t query_block(const AttentionShape& s) {
  constexpr int64_t kStackedRows = 256;
  const int64_t rows = std::clamp<int64_t>(kStackedRows / heads_per_stack(s), 16, kQueryBlock);
  return std::min(rows, s.seq_q);
}

// One query block of `stack` query heads h0 .. h0 + stack - 1 (one KV head's): where its rows live
// in q, out and g ([batch * seq_q, heads * head_dim]) and in the stacked copies [query row *
// stack + head, head_dim] that the products read.
struct StackedBlock {
  const AttentionShape& s;
  int64_t b, h0, stack, t0, rows, stacked, count, kv_off;
  StackedBlock(const AttentionShape& shape, int64_t batch_index, int64_t first_head, int64_t heads,
               int64_t first_query, int64_t block)
      : s(shape),
        b(batch_index),
        h0(first_head),
        stack(heads),
        t0(first_query),
        rows(std::min(block, shape.seq_q - first_query)),
        stacked(rows * heads),
        count(block_keys(shape, first_query, rows)),
        kv_off(batch_index * shape.seq_k * shape.kv_stride() +
               first_head / shape.group() * shape.head_dim) {}
  int64_t query(int64_t i) const { return t0 + i / stack; }
  int64_t row_offset(int64_t i) const {
    return (b * s.seq_q + query(i)) * s.q_stride() + (h0 + i % stack) * s.head_dim;
  }
  int64_t lse_index(int64_t i) const { return (b * s.heads + h0 + i % stack) * s.seq_q + query(i); }
  // The stacked heads of a query row are adjacent in q, out and g: one run per query row.
  template <typename T>
  void gather(const T* src, T* to) const {
    const int64_t width = stack * s.head_dim;
    for (int64_t r = 0; r < rows; ++r)
      std::copy_n(src + row_offset(r * stack), width, to + r * width);
  }
  template <typename T>
  void scatter(const T* from, T* dst, bool add) const {
    const int64_t width = stack * s.head_dim;
    for (int64_t r = 0; r < rows; ++r) {
      T* to = dst + row_offset(r * stack);
      const T* row = from + r * width;
      if (!add) {
        std::copy_n(row, width, to);
        continue;
      }
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) to[c] += row[c];
    }
  }
};

// One query head of one query row (t of sequence b) as plain loops: scores, softmax, and the
// probability-weighted sum of values into out. `scores` holds a row of seq_k.
template <typename T>
void attend_row(const T* q, const T* k, const T* v, const AttentionShape& s, int64_t b, int64_t t,
                int64_t h, const uint8_t* key_valid, T* scores, T* out, T* lse) {
  const int64_t hd = s.head_dim, kv_stride = s.kv_stride();
  const int64_t row = (b * s.seq_q + t) * s.q_stride() + h * hd;
  const T* qr = q + row;
  const T* keys = k + b * s.seq_k * kv_stride + h / s.group() * hd;
  const T* values = v + (keys - k);
  const T scale = T(s.score_scale());
  const int64_t count = block_keys(s, t, 1);
  // Keys before the sliding window are hidden: no scores for them.
  const int64_t first = s.window > 0 ? std::max<int64_t>(0, count - s.window) : 0;
  // Four keys at a time: four independent sums instead of one chain of dependent adds.
  int64_t j = first;
  for (; j + 4 <= count; j += 4) {
    const T *k0 = keys + j * kv_stride, *k1 = k0 + kv_stride, *k2 = k1 + kv_stride,
            *k3 = k2 + kv_stride;
    T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
    for (int64_t c = 0; c < hd; ++c) {
      a0 += qr[c] * k0[c];
      a1 += qr[c] * k1[c];
      a2 += qr[c] * k2[c];
      a3 += qr[c] * k3[c];
    }
    scores[j] = scale * a0;
    scores[j + 1] = scale * a1;
    scores[j + 2] = scale * a2;
    scores[j + 3] = scale * a3;
  }
  for (; j < count; ++j) {
    const T* kr = keys + j * kv_stride;
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < hd; ++c) acc += qr[c] * kr[c];
    scores[j] = scale * acc;
  }
  if (s.softcap > 0) soft_cap(scores + first, count - first, s.softcap, static_cast<T*>(nullptr));
  const int64_t limit = mask_row(scores, s, b, t, count, key_valid);
  T* o = out + row;
  std::fill(o, o + hd, T(0));
  const T mx = row_max(scores + first, limit - first);
  T& lse_at = lse[(b * s.heads + h) * s.seq_q + t];
  if (mx == -std::numeric_limits<T>::infinity()) {  // no visible key: output row zero
    lse_at = mx;
    return;
  }
  const double sum = exp_shift(scores + first, limit - first, mx);
  const T inv = T(1.0 / sum);
  // Four values per pass over the output row: a quarter of its loads and stores.
  for (j = first; j + 4 <= limit; j += 4) {
    const T p0 = scores[j] * inv, p1 = scores[j + 1] * inv, p2 = scores[j + 2] * inv,
            p3 = scores[j + 3] * inv;
    const T *v0 = values + j * kv_stride, *v1 = v0 + kv_stride, *v2 = v1 + kv_stride,
            *v3 = v2 + kv_stride;
#pragma omp simd
    for (int64_t c = 0; c < hd; ++c) o[c] += p0 * v0[c] + p1 * v1[c] + p2 * v2[c] + p3 * v3[c];
  }
  for (; j < limit; ++j) {
    const T p = scores[j] * inv;
    const T* vr = values + j * kv_stride;
#pragma omp simd
    for (int64_t c = 0; c < hd; ++c) o[c] += p * vr[c];
  }
  lse_at = mx + T(std::log(sum));
}

}  // namespace attention_detail

// f32 attention with its products on the tile GEMM (attention_tiled.cpp): one head's query rows
// are read and written where they lie, with no stacked copies, and each (sequence, KV head)'s keys
// and values are transposed once per call. It runs where the head dimension is a whole number of
// the kernels' vectors; otherwise, and for doubles, the BLAS path below.
bool tiled_attention_fits(const AttentionShape& s, const gemv::Kernels& kernels);
void attention_forward_tiled(const float* q, const float* k, const float* v,
                             const AttentionShape& s, const uint8_t* key_valid, float* out,
                             float* lse, const gemv::Kernels& kernels);
void attention_backward_tiled(const float* q, const float* k, const float* v, const float* out,
                              const float* lse, const float* g, const AttentionShape& s,
                              const uint8_t* key_valid, float* dq, float* dk, float* dv,
                              const gemv::Kernels& kernels);
// The tile GEMM's kernels for this process: those of gemv_isa() (autograd/frozen_gemv.h).
const gemv::Kernels& tile_kernels();

// A decode step's multiply-adds over the cache from which the threads share its heads: the
// rows wait on cached keys and values that the weights streaming past have evicted, so from a
// few dozen cached tokens two threads take half the time of one for the ~2 us a fork costs
// (SmolLM2-135M, 62-token prompt, two threads: 4.1-4.4 -> 3.8-4.0 ms a step).
inline constexpr int64_t kSingleQueryParallelWork = int64_t(1) << 14;
inline bool single_query_splits(const AttentionShape& s) {
  return s.batch * s.heads * s.seq_k * s.head_dim >= kSingleQueryParallelWork;
}

// A KV cache as the decode kernels read it: keys and values in f32, or as IEEE halves (half_k and
// half_v set, k and v unused); either way [batch * seq_k, kv_heads * head_dim].
struct CachedKV {
  const float* k = nullptr;
  const float* v = nullptr;
  const uint16_t* half_k = nullptr;
  const uint16_t* half_v = nullptr;
};

// A decode step's f32 attention (one query row per sequence, a head of whole vectors) on the
// vector kernels of kernels_cached_attention.h: each KV head's query heads together, a block of
// keys through every KV head at a time, each sequence's keys in `parts` ranges that threads take
// apart and whose softmaxes are then combined (0: as many as keep every thread busy where the
// sequences alone are too few).
void attention_forward_cached(const float* q, const CachedKV& kv, const AttentionShape& s,
                              const uint8_t* key_valid, float* out, float* lse,
                              const gemv::Kernels& kernels, int64_t parts = 0);
// Whether attention_forward_cached runs this shape on `kernels` (the head a whole number of
// vectors).
bool cached_attention_fits(const AttentionShape& s, const gemv::Kernels& kernels);

// A decode step's attention: one query row per sequence. Each head's few thousand multiply-adds
// cost less than the setup of the two sgemm calls the blocked path makes per head, so the rows
// run as plain loops; in f32, with a head a whole number of vectors, as vector kernels that read
// each cached key and value once for all the heads that share it.
template <typename T>
void attention_forward_single_query(const T* q, const T* k, const T* v, const AttentionShape& s,
                                    const uint8_t* key_valid, T* out, T* lse) {
  if constexpr (std::is_same_v<T, float>) {
    const gemv::Kernels& kernels = tile_kernels();
    if (cached_attention_fits(s, kernels))
      return attention_forward_cached(q, {.k = k, .v = v}, s, key_valid, out, lse, kernels);
  }
  parallel_for_with_scratch(
      s.batch * s.heads, single_query_splits(s),
      [&] { return std::vector<T>(static_cast<std::size_t>(s.seq_k)); },
      [&](std::vector<T>& scores, int64_t i) {
        attention_detail::attend_row(q, k, v, s, i / s.heads, 0, i % s.heads, key_valid,
                                     scores.data(), out, lse);
      });
}

// out [batch*seq_q, heads*head_dim]; lse [batch, heads, seq_q] (-inf for a row with no visible key,
// whose output is zero).
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const AttentionShape& s,
                       const uint8_t* key_valid, T* out, T* lse) {
  namespace d = attention_detail;
  if (s.seq_q == 1) {
    attention_forward_single_query(q, k, v, s, key_valid, out, lse);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (tiled_attention_fits(s, tile_kernels())) {
      attention_forward_tiled(q, k, v, s, key_valid, out, lse, tile_kernels());
      return;
    }
  }
  const T scale = T(s.score_scale());
  const int64_t hd = s.head_dim, stack = d::heads_per_stack(s);
  const int64_t block = d::query_block(s), blocks = (s.seq_q + block - 1) / block;
#pragma omp parallel if (parallel_worth_it(s))
  {
    std::vector<T> qs(static_cast<std::size_t>(block * stack * hd)), os(qs.size());
    std::vector<T> p(static_cast<std::size_t>(block * stack * s.seq_k));
    // Later query blocks see more keys: dynamic keeps the threads' shares even.
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h0 = 0; h0 < s.heads; h0 += stack)
        for (int64_t bi = 0; bi < blocks; ++bi) {
          const d::StackedBlock blk(s, b, h0, stack, bi * block, block);
          blk.gather(q, qs.data());
          d::gemm(false, true, blk.stacked, blk.count, hd, scale, qs.data(), hd, k + blk.kv_off,
                  s.kv_stride(), T(0), p.data(), blk.count);
          for (int64_t i = 0; i < blk.stacked; ++i) {
            T* row = p.data() + i * blk.count;
            const auto sm = d::exp_row(row, s, b, blk.query(i), blk.count, key_valid);
            for (int64_t j = 0; j < sm.limit; ++j) row[j] *= sm.inv;
            lse[blk.lse_index(i)] = sm.lse;
          }
          d::gemm(false, false, blk.stacked, hd, blk.count, T(1), p.data(), blk.count,
                  v + blk.kv_off, s.kv_stride(), T(0), os.data(), hd);
          blk.scatter(os.data(), out, false);
        }
  }
}

// Accumulates dq, dk, dv (+=) from the output gradient g. One thread owns one (batch, kv head)
// pair, i.e. every query head that reads it, so the sums into dk/dv need no synchronization and
// run in a fixed order (bit-reproducible for a given thread count).
template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const T* lse, const T* g,
                        const AttentionShape& s, const uint8_t* key_valid, T* dq, T* dk, T* dv) {
  namespace d = attention_detail;
  if constexpr (std::is_same_v<T, float>) {
    if (tiled_attention_fits(s, tile_kernels())) {
      attention_backward_tiled(q, k, v, out, lse, g, s, key_valid, dq, dk, dv, tile_kernels());
      return;
    }
  }
  const T scale = T(s.score_scale());
  const int64_t hd = s.head_dim, stack = d::heads_per_stack(s);
  const int64_t block = d::query_block(s);
#pragma omp parallel if (parallel_worth_it(s))
  {
    std::vector<T> qs(static_cast<std::size_t>(block * stack * hd)), gs(qs.size()), dqs(qs.size());
    std::vector<T> p(static_cast<std::size_t>(block * stack * s.seq_k));
    std::vector<T> ds(p.size());
    std::vector<T> slope(s.softcap > 0 ? p.size() : 0);  // d capped / d raw score
    std::vector<T> delta(static_cast<std::size_t>(block * stack));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t kvh = 0; kvh < s.kv_heads; ++kvh)
        for (int64_t h0 = kvh * s.group(); h0 < (kvh + 1) * s.group(); h0 += stack)
          for (int64_t t0 = 0; t0 < s.seq_q; t0 += block) {
            const d::StackedBlock blk(s, b, h0, stack, t0, block);
            const int64_t rows = blk.stacked, count = blk.count;
            blk.gather(q, qs.data());
            blk.gather(g, gs.data());
            // P = exp(scale * Q K^T - lse), zero where hidden (and for rows that see no key).
            d::gemm(false, true, rows, count, hd, scale, qs.data(), hd, k + blk.kv_off,
                    s.kv_stride(), T(0), p.data(), count);
            for (int64_t i = 0; i < rows; ++i) {
              T* row = p.data() + i * count;
              T* row_slope = slope.empty() ? nullptr : slope.data() + i * count;
              delta[i] = d::probability_row(row, s, b, blk.query(i), count, key_valid,
                                            lse[blk.lse_index(i)], row_slope)
                             ? d::row_dot(gs.data() + i * hd, out + blk.row_offset(i), hd)
                             : T(0);
            }
            if (dv)  // dV += P^T G
              d::gemm(true, false, count, hd, rows, T(1), p.data(), count, gs.data(), hd, T(1),
                      dv + blk.kv_off, s.kv_stride());
            if (!dq && !dk) continue;
            // dS = P * (G V^T - delta) * scale
            d::gemm(false, true, rows, count, hd, T(1), gs.data(), hd, v + blk.kv_off,
                    s.kv_stride(), T(0), ds.data(), count);
            for (int64_t i = 0; i < rows; ++i) {
              const T* pr = p.data() + i * count;
              T* dr = ds.data() + i * count;
              const T dl = delta[i];
#pragma omp simd
              for (int64_t j = 0; j < count; ++j) dr[j] = pr[j] * (dr[j] - dl) * scale;
              if (s.softcap > 0) {
                const T* sl = slope.data() + i * count;
#pragma omp simd
                for (int64_t j = 0; j < count; ++j) dr[j] *= sl[j];
              }
            }
            if (dq) {  // dQ += dS K
              d::gemm(false, false, rows, hd, count, T(1), ds.data(), count, k + blk.kv_off,
                      s.kv_stride(), T(0), dqs.data(), hd);
              blk.scatter(dqs.data(), dq, true);
            }
            if (dk)  // dK += dS^T Q
              d::gemm(true, false, count, hd, rows, T(1), ds.data(), count, qs.data(), hd, T(1),
                      dk + blk.kv_off, s.kv_stride());
          }
  }
}

}  // namespace lora::kernels
