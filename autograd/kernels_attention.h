// Causal grouped-query attention that never stores a [seq, seq] matrix: the forward keeps one row
// of scores per thread and the per-row log-sum-exp; the backward recomputes the probabilities from
// it (the FlashAttention recurrence, one query row at a time).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace lora::kernels {

struct AttentionShape {
  int64_t batch = 1;
  int64_t seq_q = 1;  // query rows per sequence
  int64_t seq_k =
      1;  // key rows per sequence (>= seq_q); query t sits at key position seq_k-seq_q+t
  int64_t heads = 1;
  int64_t kv_heads = 1;
  int64_t head_dim = 1;
  int64_t group() const { return heads / kv_heads; }
  int64_t q_stride() const { return heads * head_dim; }
  int64_t kv_stride() const { return kv_heads * head_dim; }
};

// Small problems (tests, single-token decoding of tiny models) run on the calling thread: waking
// the OpenMP team costs more than the work.
inline bool parallel_worth_it(const AttentionShape& s) {
  return s.batch * s.heads * s.seq_q * s.seq_k * s.head_dim > (int64_t(1) << 15);
}

template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T s = 0;
  // simd: lets the compiler split the sum across vector lanes (a fixed order, so still
  // deterministic); the plain loop is one dependent add per element, latency-bound.
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Scores of query row t against the keys it may see, into scores[0..last]; hidden keys get -inf.
// Returns the number of keys considered (last visible position + 1).
template <typename T>
int64_t attention_scores(const T* qrow, const T* k, const AttentionShape& s, int64_t b, int64_t kvh,
                         int64_t t, const uint8_t* key_valid, T scale, T* scores) {
  const int64_t count = s.seq_k - s.seq_q + t + 1;
  for (int64_t j = 0; j < count; ++j) {
    if (key_valid && !key_valid[b * s.seq_k + j]) {
      scores[j] = -std::numeric_limits<T>::infinity();
      continue;
    }
    const T* krow = k + (b * s.seq_k + j) * s.kv_stride() + kvh * s.head_dim;
    scores[j] = dot(qrow, krow, s.head_dim) * scale;
  }
  return count;
}

// out [batch*seq_q, heads*head_dim]; lse [batch, heads, seq_q] (-inf for a row with no visible key,
// whose output is zero).
template <typename T>
void attention_forward(const T* q, const T* k, const T* v, const AttentionShape& s,
                       const uint8_t* key_valid, T* out, T* lse) {
  const T scale = T(1.0 / std::sqrt(double(s.head_dim)));
  const int64_t hd = s.head_dim;
#pragma omp parallel if (parallel_worth_it(s))
  {
    std::vector<T> scores(static_cast<std::size_t>(s.seq_k));
    std::vector<T> acc(static_cast<std::size_t>(hd));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t h = 0; h < s.heads; ++h) {
        const int64_t kvh = h / s.group();
        for (int64_t t = 0; t < s.seq_q; ++t) {
          const int64_t row = b * s.seq_q + t;
          const T* qrow = q + row * s.q_stride() + h * hd;
          T* orow = out + row * s.q_stride() + h * hd;
          const int64_t count =
              attention_scores(qrow, k, s, b, kvh, t, key_valid, scale, scores.data());
          T mx = -std::numeric_limits<T>::infinity();
          for (int64_t j = 0; j < count; ++j) mx = std::max(mx, scores[j]);
          T* lse_at = lse + (b * s.heads + h) * s.seq_q + t;
          if (mx == -std::numeric_limits<T>::infinity()) {
            std::fill(orow, orow + hd, T(0));
            *lse_at = mx;
            continue;
          }
          std::fill(acc.begin(), acc.end(), T(0));
          T sum = 0;
          for (int64_t j = 0; j < count; ++j) {
            const T p = std::exp(scores[j] - mx);  // exp(-inf) = 0 for hidden keys
            if (p == T(0)) continue;
            sum += p;
            const T* vrow = v + (b * s.seq_k + j) * s.kv_stride() + kvh * hd;
            for (int64_t d = 0; d < hd; ++d) acc[d] += p * vrow[d];
          }
          const T inv = T(1) / sum;
          for (int64_t d = 0; d < hd; ++d) orow[d] = acc[d] * inv;
          *lse_at = mx + std::log(sum);
        }
      }
  }
}

// Accumulates dq, dk, dv (+=) from the output gradient g. One thread owns one (batch, kv head)
// pair, i.e. every query head that reads it, so the sums into dk/dv need no synchronization and
// run in a fixed order (bit-reproducible for a given thread count).
template <typename T>
void attention_backward(const T* q, const T* k, const T* v, const T* out, const T* lse, const T* g,
                        const AttentionShape& s, const uint8_t* key_valid, T* dq, T* dk, T* dv) {
  const T scale = T(1.0 / std::sqrt(double(s.head_dim)));
  const int64_t hd = s.head_dim;
#pragma omp parallel if (parallel_worth_it(s))
  {
    std::vector<T> scores(static_cast<std::size_t>(s.seq_k));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t kvh = 0; kvh < s.kv_heads; ++kvh)
        for (int64_t h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h)
          for (int64_t t = 0; t < s.seq_q; ++t) {
            const T row_lse = lse[(b * s.heads + h) * s.seq_q + t];
            if (row_lse == -std::numeric_limits<T>::infinity()) continue;
            const int64_t row = b * s.seq_q + t;
            const T* qrow = q + row * s.q_stride() + h * hd;
            const T* grow = g + row * s.q_stride() + h * hd;
            const T delta = dot(grow, out + row * s.q_stride() + h * hd, hd);
            const int64_t count =
                attention_scores(qrow, k, s, b, kvh, t, key_valid, scale, scores.data());
            T* dqrow = dq ? dq + row * s.q_stride() + h * hd : nullptr;
            for (int64_t j = 0; j < count; ++j) {
              const T p = std::exp(scores[j] - row_lse);
              if (p == T(0)) continue;
              const int64_t kv_off = (b * s.seq_k + j) * s.kv_stride() + kvh * hd;
              const T* krow = k + kv_off;
              const T* vrow = v + kv_off;
              if (dv)
                for (int64_t d = 0; d < hd; ++d) dv[kv_off + d] += p * grow[d];
              const T ds = p * (dot(grow, vrow, hd) - delta) * scale;
              if (dqrow)
                for (int64_t d = 0; d < hd; ++d) dqrow[d] += ds * krow[d];
              if (dk)
                for (int64_t d = 0; d < hd; ++d) dk[kv_off + d] += ds * qrow[d];
            }
          }
  }
}

}  // namespace lora::kernels
