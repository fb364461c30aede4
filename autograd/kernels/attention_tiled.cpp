// The f32 attention of kernels_attention.h with its products on the tile GEMM instead of BLAS.
// BLAS needed each block's query rows gathered into a stacked copy, its outputs scattered back, and
// K and V repacked on every call; here the products read a head's rows where they lie in the
// [tokens, heads * head_dim] tensors and write their results there, and each (sequence, KV head)'s
// keys and values are transposed once for every query block and head that reads them. The row
// softmax and its masks are attention_detail's, shared with the BLAS path.
#include <algorithm>
#include <vector>

#include "autograd/kernels/kernels_attention.h"
#include "autograd/line_aligned.h"

namespace lora::kernels {
namespace {

namespace d = attention_detail;

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The row stride of the transposed keys and the score blocks, which the products walk down their
// rows, a head_dim or block of them per panel.
int64_t score_stride(int64_t seq_k, int64_t lanes) {
  return gemv::odd_line_stride(round_up(seq_k, lanes));
}

// Operands of one tile GEMM call: C = alpha * A B (+ C), A read with strides (a_row, a_col).
gemv::TileArgs tile(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col,
                    const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate,
                    float alpha = 1.0f) {
  return {.m = m,
          .n = n,
          .k = k,
          .alpha = alpha,
          .a = a,
          .a_row = a_row,
          .a_col = a_col,
          .b = b,
          .ldb = ldb,
          .c = c,
          .ldc = ldc,
          .accumulate = accumulate};
}

// One (sequence, KV head)'s keys or values transposed: [head_dim, ld], keys contiguous, zero from
// seq_k to ld, so that a product may run over whole vectors of keys. Sixteen keys at a time: their
// rows stay in L1 while each of head_dim output rows gets one line of them.
void transpose_keys(const float* src, const AttentionShape& s, int64_t b, int64_t kvh, int64_t ld,
                    float* to) {
  constexpr int64_t kKeys = 16;
  const float* base = src + b * s.seq_k * s.kv_stride() + kvh * s.head_dim;
  for (int64_t j0 = 0; j0 < s.seq_k; j0 += kKeys) {
    const int64_t keys = std::min(kKeys, s.seq_k - j0);
    for (int64_t c = 0; c < s.head_dim; ++c)
      for (int64_t j = j0; j < j0 + keys; ++j) to[c * ld + j] = base[j * s.kv_stride() + c];
  }
  for (int64_t c = 0; c < s.head_dim; ++c)
    std::fill(to + c * ld + s.seq_k, to + (c + 1) * ld, 0.0f);
}

// One head's block of query rows t0 .. t0 + rows - 1 of sequence b, and the keys they may see.
struct HeadBlock {
  const AttentionShape& s;
  int64_t b, h, t0, rows, count;
  HeadBlock(const AttentionShape& shape, int64_t batch_index, int64_t head, int64_t first_query,
            int64_t block)
      : s(shape),
        b(batch_index),
        h(head),
        t0(first_query),
        rows(std::min(block, shape.seq_q - first_query)),
        count(d::block_keys(shape, first_query, rows)) {}
  // Where the block's first row lives in q, out, g and dq.
  int64_t row_offset() const { return (b * s.seq_q + t0) * s.q_stride() + h * s.head_dim; }
  // Where its KV head's first key lives in k, v, dk and dv.
  int64_t kv_offset() const { return b * s.seq_k * s.kv_stride() + h / s.group() * s.head_dim; }
  int64_t lse_index(int64_t i) const { return (b * s.heads + h) * s.seq_q + t0 + i; }
};

// p[i, j] = scale * q row i . key j for j < count (and 0 up to whole vectors of keys).
void block_scores(const gemv::Kernels& kn, const HeadBlock& blk, const float* q, const float* kt,
                  int64_t ld, float* p) {
  const AttentionShape& s = blk.s;
  kn.tile_gemm(tile(blk.rows, round_up(blk.count, kn.lanes), s.head_dim, q + blk.row_offset(),
                    s.q_stride(), 1, kt, ld, p, ld, false, float(s.score_scale())));
}

void forward_block(const gemv::Kernels& kn, const HeadBlock& blk, const float* q, const float* kt,
                   const float* v, const uint8_t* key_valid, int64_t ld, float* p, float* inv,
                   float* out, float* lse) {
  const AttentionShape& s = blk.s;
  block_scores(kn, blk, q, kt, ld, p);
  for (int64_t i = 0; i < blk.rows; ++i) {
    const auto sm = d::exp_row(p + i * ld, s, blk.b, blk.t0 + i, blk.count, key_valid);
    lse[blk.lse_index(i)] = sm.lse;
    inv[i] = sm.inv;  // 0 where no key is visible: the output row is zero
  }
  // The unnormalized probabilities times V, then each output row scaled: head_dim
  // multiplications per row instead of one per visible key.
  float* o = out + blk.row_offset();
  kn.tile_gemm(tile(blk.rows, s.head_dim, blk.count, p, ld, 1, v + blk.kv_offset(), s.kv_stride(),
                    o, s.q_stride(), false));
  for (int64_t i = 0; i < blk.rows; ++i) {
    float* orow = o + i * s.q_stride();
    const float scale = inv[i];
#pragma omp simd
    for (int64_t c = 0; c < s.head_dim; ++c) orow[c] *= scale;
  }
}

// Per-thread buffers of the backward.
struct BackwardScratch {
  LineAlignedFloats kt, vt, p, ds, slope, delta;
  BackwardScratch(const AttentionShape& s, int64_t ld, int64_t block)
      : kt(static_cast<std::size_t>(s.head_dim * ld)),
        vt(kt.size()),
        p(static_cast<std::size_t>(block * ld)),
        ds(p.size()),
        slope(s.softcap > 0 ? p.size() : 0),
        delta(static_cast<std::size_t>(block)) {}
};

// P = exp(scores - lse) (zero where hidden), with the soft-cap's slope and delta = g . out per row.
void recompute_probabilities(const gemv::Kernels& kn, const HeadBlock& blk, const float* q,
                             const float* out, const float* lse, const float* g,
                             const uint8_t* key_valid, int64_t ld, BackwardScratch& w) {
  const AttentionShape& s = blk.s;
  block_scores(kn, blk, q, w.kt.data(), ld, w.p.data());
  const int64_t first = blk.row_offset();
  for (int64_t i = 0; i < blk.rows; ++i) {
    float* slope = w.slope.empty() ? nullptr : w.slope.data() + i * ld;
    const int64_t at = first + i * s.q_stride();
    w.delta[i] = d::probability_row(w.p.data() + i * ld, s, blk.b, blk.t0 + i, blk.count, key_valid,
                                    lse[blk.lse_index(i)], slope)
                     ? d::row_dot(g + at, out + at, s.head_dim)
                     : 0.0f;
  }
}

// dS = P * (G V^T - delta) * scale (times the soft-cap's slope), in w.ds.
void score_gradients(const gemv::Kernels& kn, const HeadBlock& blk, const float* g, int64_t ld,
                     BackwardScratch& w) {
  const AttentionShape& s = blk.s;
  kn.tile_gemm(tile(blk.rows, round_up(blk.count, kn.lanes), s.head_dim, g + blk.row_offset(),
                    s.q_stride(), 1, w.vt.data(), ld, w.ds.data(), ld, false));
  const float scale = float(s.score_scale());
  for (int64_t i = 0; i < blk.rows; ++i) {
    const float* pr = w.p.data() + i * ld;
    float* dr = w.ds.data() + i * ld;
    const float dl = w.delta[i];
#pragma omp simd
    for (int64_t j = 0; j < blk.count; ++j) dr[j] = pr[j] * (dr[j] - dl) * scale;
    if (s.softcap > 0) {
      const float* sl = w.slope.data() + i * ld;
#pragma omp simd
      for (int64_t j = 0; j < blk.count; ++j) dr[j] *= sl[j];
    }
  }
}

struct Gradients {
  float *dq, *dk, *dv;
};

void backward_block(const gemv::Kernels& kn, const HeadBlock& blk, const float* q, const float* k,
                    const float* out, const float* lse, const float* g, const uint8_t* key_valid,
                    int64_t ld, BackwardScratch& w, const Gradients& grads) {
  const AttentionShape& s = blk.s;
  const int64_t hd = s.head_dim, first = blk.row_offset(), kv = blk.kv_offset();
  recompute_probabilities(kn, blk, q, out, lse, g, key_valid, ld, w);
  if (grads.dv)  // dV += P^T G
    kn.tile_gemm(tile(blk.count, hd, blk.rows, w.p.data(), 1, ld, g + first, s.q_stride(),
                      grads.dv + kv, s.kv_stride(), true));
  if (!grads.dq && !grads.dk) return;
  score_gradients(kn, blk, g, ld, w);
  if (grads.dq)  // dQ += dS K
    kn.tile_gemm(tile(blk.rows, hd, blk.count, w.ds.data(), ld, 1, k + kv, s.kv_stride(),
                      grads.dq + first, s.q_stride(), true));
  if (grads.dk)  // dK += dS^T Q
    kn.tile_gemm(tile(blk.count, hd, blk.rows, w.ds.data(), 1, ld, q + first, s.q_stride(),
                      grads.dk + kv, s.kv_stride(), true));
}

}  // namespace

bool tiled_attention_fits(const AttentionShape& s, const gemv::Kernels& kernels) {
  return kernels.tile_gemm != nullptr && s.head_dim % kernels.lanes == 0;
}

void attention_forward_tiled(const float* q, const float* k, const float* v,
                             const AttentionShape& s, const uint8_t* key_valid, float* out,
                             float* lse, const gemv::Kernels& kernels) {
  const int64_t hd = s.head_dim, ld = score_stride(s.seq_k, kernels.lanes);
  const int64_t pairs = s.batch * s.kv_heads, block = std::min(kQueryBlock, s.seq_q);
  const int64_t blocks = (s.seq_q + block - 1) / block;
  LineAlignedFloats kt(static_cast<std::size_t>(pairs * hd * ld));
#pragma omp parallel if (parallel_worth_it(s))
  {
#pragma omp for schedule(static)
    for (int64_t pair = 0; pair < pairs; ++pair)
      transpose_keys(k, s, pair / s.kv_heads, pair % s.kv_heads, ld, kt.data() + pair * hd * ld);
    LineAlignedFloats p(static_cast<std::size_t>(block * ld)), inv(static_cast<std::size_t>(block));
    // Later query blocks see more keys: dynamic keeps the threads' shares even. Heads innermost:
    // a query row's heads lie side by side, so neighbouring work reads neighbouring lines.
#pragma omp for collapse(3) schedule(dynamic)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t bi = 0; bi < blocks; ++bi)
        for (int64_t h = 0; h < s.heads; ++h) {
          const HeadBlock blk(s, b, h, bi * block, block);
          const float* keys = kt.data() + (b * s.kv_heads + h / s.group()) * hd * ld;
          forward_block(kernels, blk, q, keys, v, key_valid, ld, p.data(), inv.data(), out, lse);
        }
  }
}

void attention_backward_tiled(const float* q, const float* k, const float* v, const float* out,
                              const float* lse, const float* g, const AttentionShape& s,
                              const uint8_t* key_valid, float* dq, float* dk, float* dv,
                              const gemv::Kernels& kernels) {
  const int64_t ld = score_stride(s.seq_k, kernels.lanes), block = std::min(kQueryBlock, s.seq_q);
  const Gradients grads{dq, dk, dv};
#pragma omp parallel if (parallel_worth_it(s))
  {
    BackwardScratch w(s, ld, block);
    // One thread owns one (sequence, KV head): its sums into dk and dv need no synchronization.
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.batch; ++b)
      for (int64_t kvh = 0; kvh < s.kv_heads; ++kvh) {
        transpose_keys(k, s, b, kvh, ld, w.kt.data());
        transpose_keys(v, s, b, kvh, ld, w.vt.data());
        // The group's heads innermost: their rows of q, g and out share lines, read once.
        for (int64_t t0 = 0; t0 < s.seq_q; t0 += block)
          for (int64_t h = kvh * s.group(); h < (kvh + 1) * s.group(); ++h)
            backward_block(kernels, HeadBlock(s, b, h, t0, block), q, k, out, lse, g, key_valid, ld,
                           w, grads);
      }
  }
}

}  // namespace lora::kernels
