// The matrix-vector kernels' interface (kernels_gemv.h), one set per instruction set: the AVX2,
// AVX-512 and AVX-512 with VNNI copies are compiled with their own flags (autograd/CMakeLists.txt)
// and must be called only where the CPU has them (frozen_gemv.cpp decides).
#pragma once
#include <cstdint>

namespace lora::gemv {

// One product's rows against one vector: y[r] = row r . x + beta * y[r].
struct RowsArgs {
  const uint8_t* data = nullptr;  // row r starts at data + r * row_bytes
  int64_t row_bytes = 0;
  int64_t rows = 0;  // rows at data (prefetching stops at the last)
  int64_t cols = 0;
  const float* x = nullptr;       // permuted by permute_for_nibbles for MLX 4-bit rows
  const float* sums = nullptr;    // x summed per MLX group or per ggml block (16 or 32 elements)
  const float* scales = nullptr;  // MLX: [rows, groups]
  const float* biases = nullptr;
  const float* halves = nullptr;  // f16_to_f32_table(): ggml block scales looked up by their bits
  int64_t group_size = 0;         // MLX
  // x rounded to int8, for the int8 kernels. MLX 4-bit: per group, its even elements in x_low
  // and odd ones in x_high, each 8 elements' scale in x_scales, zero past cols up to whole
  // vectors. ggml blocks: per 32 elements, in element order in x_low, each 32's scale in x_scales.
  const int8_t* x_low = nullptr;
  const int8_t* x_high = nullptr;
  const float* x_scales = nullptr;
  float* y = nullptr;
  float beta = 0.0f;
};

using RowsKernel = void (*)(const RowsArgs&, int64_t r0, int64_t r1);

// A small f32 GEMM on one thread, for operands that BLAS would first have to copy or pack (a
// prompt's few dozen tokens against a block of widened rows; attention's per-head rows inside
// [tokens, heads * head_dim] tensors):
// C = alpha * A B (+ C when accumulate), A(i, p) = a[i * a_row + p * a_col], B(p, j) =
// b[p * ldb + j], C(i, j) = c[i * ldc + j]; n must be a multiple of lanes.
struct TileArgs {
  int64_t m = 0, n = 0, k = 0;
  float alpha = 1.0f;
  const float* a = nullptr;
  int64_t a_row = 0, a_col = 0;
  const float* b = nullptr;
  int64_t ldb = 0;
  float* c = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
};
using TileGemmKernel = void (*)(const TileArgs&);

// A row stride for an operand tile_gemm walks down row by row (a panel of B, rows of A): at least
// n floats, whole 64-byte lines, and an odd number of them. At a power-of-two stride (512 floats:
// 2 KiB) the rows fall into a few of L1's 64 sets and evict one another on every pass; an odd
// number of lines spreads them over all the sets.
inline int64_t odd_line_stride(int64_t n) {
  constexpr int64_t kLineFloats = 16;
  const int64_t lines = (n + kLineFloats - 1) / kLineFloats;
  return (lines % 2 == 1 ? lines : lines + 1) * kLineFloats;
}

// The query heads that share one KV head, in one decode step, against one sequence's cache.
struct CachedHeadsArgs {
  const float* q = nullptr;     // `heads` rows of head_dim, adjacent
  const float* keys = nullptr;  // key j at keys + j * kv_stride
  const float* values = nullptr;
  // A cache of IEEE halves instead, where these are set (keys and values then unused).
  const uint16_t* half_keys = nullptr;
  const uint16_t* half_values = nullptr;
  int64_t kv_stride = 0;
  int64_t cached = 0;    // keys in the cache: prefetching ahead of a call stops there
  int64_t head_dim = 0;  // a multiple of Kernels::lanes
  int64_t heads = 0;
  float* scores = nullptr;  // `heads` rows of ld
  int64_t ld = 0;
};
// scores[h * ld + j] = scale * q_h . key_j for j in [first, count).
using CachedScoresKernel = void (*)(const CachedHeadsArgs&, int64_t first, int64_t count,
                                    float scale);
// out[h * head_dim + c] += sum over j in [first, count) of scores[h * ld + j] * value_j[c].
using CachedValuesKernel = void (*)(const CachedHeadsArgs&, int64_t first, int64_t count,
                                    float* out);

struct Kernels {
  void (*permute_for_nibbles)(const float* x, int64_t cols, float* out);
  RowsKernel mlx4, mlx8, mlx4_int8, q4_0, q8_0, f32, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k, q2_k, q3_k;
  TileGemmKernel tile_gemm;
  CachedScoresKernel cached_scores;
  CachedValuesKernel cached_values;
  int tile_rows;  // rows of C per register block of tile_gemm
  int lanes;      // floats per vector
  // ggml blocks against int8 x (kernels_gemv_int8_blocks.h): none in the portable baseline.
  RowsKernel q4_0_int8 = nullptr, q4_1_int8 = nullptr, q5_0_int8 = nullptr, q5_1_int8 = nullptr,
             q8_0_int8 = nullptr, q4_k_int8 = nullptr, q5_k_int8 = nullptr, q6_k_int8 = nullptr,
             q2_k_int8 = nullptr, q3_k_int8 = nullptr;
  // Q4_0 in GgmlLayout::Q4_0Octets against int8 x: rows r0 and r1 multiples of 8 (or r1 = rows).
  RowsKernel q4_0_octets_int8 = nullptr;
  // The IQ4 and MXFP4 blocks (kernels_gemv_iq4.h), f32 and int8 x: none in the portable
  // baseline, which widens their rows.
  RowsKernel iq4_nl = nullptr, iq4_xs = nullptr, mxfp4 = nullptr, iq4_nl_int8 = nullptr,
             iq4_xs_int8 = nullptr, mxfp4_int8 = nullptr;
  // The codebook and ternary types against int8 x (kernels_gemv_codebook.h); with f32 x, and on
  // the portable baseline, their rows are widened.
  RowsKernel iq2_xxs_int8 = nullptr, iq2_xs_int8 = nullptr, iq2_s_int8 = nullptr,
             iq3_xxs_int8 = nullptr, iq3_s_int8 = nullptr, iq1_s_int8 = nullptr,
             iq1_m_int8 = nullptr, tq2_0_int8 = nullptr, tq1_0_int8 = nullptr;
};

}  // namespace lora::gemv

namespace lora::gemv_avx2 {
const gemv::Kernels& kernels();
}
namespace lora::gemv_avx512 {
const gemv::Kernels& kernels();
}
namespace lora::gemv_avx512_vnni {
const gemv::Kernels& kernels();
}
