// The matrix-vector row loops of frozen_gemv, written once over a vector type V of W float lanes
// (AVX-512: 16, AVX2: 8, the portable baseline: 1) and compiled once per instruction set
// (kernels/gemv_{avx2,avx512}.cpp with their own -m flags, the baseline in frozen_gemv.cpp).
// Everything here has internal linkage so the copies never meet at link time.
//
// V provides: reg (W floats), ireg (W int32), zero(), load(const float*), set1, add, mul, fmadd,
// hsum(reg); load_u8 / load_s8 (W bytes widened to W int32 lanes), low_nibble / high_nibble /
// to_float (int lanes to float); and15 / shr4 / ior (int lanes: low nibble, high nibble, or);
// bit_lanes16(bits) (lane l: 16 if bit l of bits is set, else 0); high_pair<S>(h) (lane: the two
// bits that shifting h left by S (right by -S) puts at bits 4-5, as 0..48); lane_bit_to<To>(h, s)
// (lane: 2^To if bit s of its byte h is set, else 0); kCodeTable, and where it is true codes() (the
// floats 0..15) and lookup_low / lookup_high (a lane's low or high nibble picks one of a
// register's 16 floats); sum_each, for kernels_cached_attention.h; for the int8 kernels
// load_bytes / load_bytes_partial (4W bytes, or the first n), dot_nibbles(codes, x_low, x_high)
// (lane l: the 4 low nibbles of its bytes times x_low's 4 bytes plus the 4 high nibbles times
// x_high's), group_index(lanes per group) and spread_groups(scales, count, index) (lane l: the
// scale of the group it falls in). Block scales (IEEE halves) come from RowsArgs::halves, a table:
// a load where a conversion took three vector uops, 8% of a Qwen2.5-0.5B-shape Q4_0 decode step.
//
// Each loop works on R rows at once (4, then 1 for the tail): R independent accumulator chains
// hide the FMA latency, and each load of x serves R rows.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#include "autograd/kernels/gemv_isa.h"
#include "autograd/kernels/kernels_cached_attention.h"
#include "autograd/kernels/kernels_prefetch.h"

namespace {

using lora::gemv::RowsArgs;

// Loops over the R rows unrolled whole: the accumulator arrays then live in registers (GCC at
// -O2 keeps them on the stack otherwise, a store and a reload per multiply-add).
#define LORA_GEMV_UNROLL _Pragma("GCC unroll 4")

// Pulls rows kPrefetchRows ahead toward the cache while these R are read: as the loop moves
// `step` bytes along each of its rows, that block (R contiguous rows) is touched R * step bytes
// further, so both end together. Short rows (a few hundred bytes) are too short for the hardware
// prefetcher to find on its own, and one block ahead (about a kilobyte) is read sooner than
// memory answers; 16 rows ahead is several kilobytes.
inline constexpr int64_t kPrefetchRows = 16;
template <int R>
inline void prefetch_next_rows(const RowsArgs& a, int64_t r0, int64_t offset, int64_t step) {
  if (r0 + kPrefetchRows + R > a.rows) return;
  const uint8_t* next = a.data + (r0 + kPrefetchRows) * a.row_bytes + R * offset;
  for (int64_t b = 0; b < R * step; b += 64) prefetch_line(next + b);
}

// A ggml block's f16 scale at p, by table: its entry, and its value.
inline const float* half_entry(const RowsArgs& a, const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return a.halves + h;
}
inline float half_at(const RowsArgs& a, const uint8_t* p) { return *half_entry(a, p); }

// Points rows at the R rows from r0 and zeroes their accumulators.
template <class V, int R>
[[gnu::always_inline]] inline void start_rows(const RowsArgs& a, int64_t r0,
                                              typename V::reg (&acc)[R],
                                              const uint8_t* (&rows)[R]) {
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    acc[r] = V::zero();
    rows[r] = a.data + (r0 + r) * a.row_bytes;
  }
}

inline void store_row(float* y, int64_t r, float dot, float beta) {
  y[r] = beta == 0.0f ? dot : dot + beta * y[r];
}

// The rows' bias terms bias_g * sum(x_g), W groups a vector, added to their accumulators before the
// horizontal sums: a masked load and a multiply-add per row and W groups. Scalar multiply-adds, one
// per group and row, cost as much as the codes' own steps on rows of a few hundred elements.
// Both helpers below are forced inline: as calls, the accumulators they take would leave the
// registers for memory (a quarter of the int8 kernel's speed lost on a 576-column matrix).
template <class V, int R>
[[gnu::always_inline]] inline void add_bias_terms(const RowsArgs& a, int64_t r0, int64_t groups,
                                                  typename V::reg (&acc)[R]) {
  for (int64_t g = 0; g < groups; g += V::W) {
    const auto sums = V::load_partial(a.sums + g, groups - g);
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r)
      acc[r] =
          V::fmadd(V::load_partial(a.biases + (r0 + r) * groups + g, groups - g), sums, acc[r]);
  }
}

// Each row's accumulator summed across its lanes and stored; four rows in one reduction.
template <class V, int R>
[[gnu::always_inline]] inline void store_rows(const RowsArgs& a, int64_t r0,
                                              const typename V::reg (&acc)[R]) {
  if constexpr (R == 4) {
    float sums[4];
    V::hsum4(acc, sums);
    for (int r = 0; r < 4; ++r) store_row(a.y, r0 + r, sums[r], a.beta);
  } else {
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) store_row(a.y, r0 + r, V::hsum(acc[r]), a.beta);
  }
}

// MLX 4-bit codes sit two per byte, the even element in the low nibble: W bytes widened to W
// lanes give W even elements (low nibbles) and the W odd ones after them (high nibbles). x is
// permuted once per product, in chunks of 2W, so that both halves meet their x as plain loads.
template <class V>
void permute_for_nibbles(const float* x, int64_t cols, float* out) {
  constexpr int W = V::W;
  for (int64_t c = 0; c + 2 * W <= cols; c += 2 * W)
    for (int l = 0; l < W; ++l) {
      out[c + l] = x[c + 2 * l];
      out[c + W + l] = x[c + 2 * l + 1];
    }
}

// MLX affine rows: w = scale * q + bias per group, so a row's dot is
// sum_g scale_g * (q_g . x_g) + bias_g * sum(x_g); the group sums of x come precomputed.
// Where V can look a code up in a register of 16 floats (AVX-512's vpermps), each group's 16
// possible weights scale * q + bias are formed once per row, and the codes fetch them: no
// conversion, and no per-group scaling of partial sums.
template <class V, int R>
void mlx4_rows_by_table(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  const int64_t group = a.group_size, groups = a.cols / group;
  typename V::reg lo[R], hi[R];
  const uint8_t* rows[R];
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    lo[r] = hi[r] = V::zero();
    rows[r] = a.data + (r0 + r) * a.row_bytes;
  }
  for (int64_t g = 0; g < groups; ++g) {
    typename V::reg table[R];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const int64_t at = (r0 + r) * groups + g;
      table[r] = V::fmadd(V::codes(), V::set1(a.scales[at]), V::set1(a.biases[at]));
    }
    for (int64_t c = g * group; c < (g + 1) * group; c += 2 * W) {
      const auto xl = V::load(a.x + c), xh = V::load(a.x + c + W);
      prefetch_next_rows<R>(a, r0, c / 2, W);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const auto codes = V::load_u8(rows[r] + c / 2);
        lo[r] = V::fmadd(V::lookup_low(codes, table[r]), xl, lo[r]);
        hi[r] = V::fmadd(V::lookup_high(codes, table[r]), xh, hi[r]);
      }
    }
  }
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) lo[r] = V::add(lo[r], hi[r]);
  store_rows<V, R>(a, r0, lo);
}

template <class V, int R>
void mlx4_rows_at(const RowsArgs& a, int64_t r0) {
  if constexpr (V::kCodeTable) return mlx4_rows_by_table<V, R>(a, r0);
  constexpr int W = V::W;
  const int64_t group = a.group_size, groups = a.cols / group;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t g = 0; g < groups; ++g) {
    typename V::reg lo[R], hi[R];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) lo[r] = hi[r] = V::zero();
    for (int64_t c = g * group; c < (g + 1) * group; c += 2 * W) {
      const auto xl = V::load(a.x + c), xh = V::load(a.x + c + W);
      prefetch_next_rows<R>(a, r0, c / 2, W);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const auto codes = V::load_u8(rows[r] + c / 2);
        lo[r] = V::fmadd(V::low_nibble(codes), xl, lo[r]);
        hi[r] = V::fmadd(V::high_nibble(codes), xh, hi[r]);
      }
    }
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const int64_t at = (r0 + r) * groups + g;
      acc[r] = V::fmadd(V::add(lo[r], hi[r]), V::set1(a.scales[at]), acc[r]);
    }
  }
  add_bias_terms<V, R>(a, r0, groups, acc);
  store_rows<V, R>(a, r0, acc);
}

// MLX 8-bit: one code per byte, in element order.
template <class V, int R>
void mlx8_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  const int64_t group = a.group_size, groups = a.cols / group;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t g = 0; g < groups; ++g) {
    typename V::reg even[R], odd[R];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) even[r] = odd[r] = V::zero();
    for (int64_t c = g * group; c < (g + 1) * group; c += 2 * W) {
      const auto x0 = V::load(a.x + c), x1 = V::load(a.x + c + W);
      prefetch_next_rows<R>(a, r0, c, 2 * W);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        even[r] = V::fmadd(V::to_float(V::load_u8(rows[r] + c)), x0, even[r]);
        odd[r] = V::fmadd(V::to_float(V::load_u8(rows[r] + c + W)), x1, odd[r]);
      }
    }
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const int64_t at = (r0 + r) * groups + g;
      acc[r] = V::fmadd(V::add(even[r], odd[r]), V::set1(a.scales[at]), acc[r]);
    }
  }
  add_bias_terms<V, R>(a, r0, groups, acc);
  store_rows<V, R>(a, r0, acc);
}

// One step's inputs that do not change from row to row: where it is, the group its first lane
// falls in, and how many groups' scales its lanes take.
struct Int8Step {
  int64_t offset, group, scales;
};

template <class V, int R, bool Partial>
inline void mlx4_int8_step(const RowsArgs& a, int64_t r0, const Int8Step& st,
                           const uint8_t* const (&rows)[R], const float* const (&scales)[R],
                           typename V::reg (&acc)[R], typename V::ireg scale_index) {
  const int64_t o = st.offset;
  const auto xl = V::load_bytes(a.x_low + o), xh = V::load_bytes(a.x_high + o);
  const auto dx = V::load(a.x_scales + o / 4);
  prefetch_next_rows<R>(a, r0, o, 4 * V::W);
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    const auto codes =
        Partial ? V::load_bytes_partial(rows[r] + o, a.cols / 2 - o) : V::load_bytes(rows[r] + o);
    const auto ws = V::spread_groups(scales[r] + st.group, st.scales, scale_index);
    acc[r] = V::fmadd(V::to_float(V::dot_nibbles(codes, xl, xh)), V::mul(ws, dx), acc[r]);
  }
}

// MLX 4-bit rows against x rounded to int8 (GemvActivations::Int8): x_g ~ dx_g * xq_g per group,
// so a group's dot is scale_g * dx_g * (q_g . xq_g) + bias_g * sum(x_g), the first term in integer
// multiply-adds of 4W code bytes (8W weights) a step: two byte products per element pair and one
// widening add for four, against a lookup or conversion and an FMA per 16 weights in f32. The
// codes' low nibbles meet x's even elements (x_low) and the high nibbles its odd ones (x_high);
// lane l of a step covers 8 elements, whose dx is x_scales[that element / 8]. The prepared x is
// zero past the row's end, so a last partial step reads only the bytes that are there.
template <class V, int R>
void mlx4_int8_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int64_t kStep = 4 * V::W;
  const int64_t bytes = a.cols / 2, groups = a.cols / a.group_size;
  // Groups are powers of two: shifts, not divisions, in the loop.
  const int group_shift = std::countr_zero(static_cast<uint64_t>(a.group_size));
  const int64_t per_step = std::max<int64_t>(1, 8 * V::W >> group_shift);
  const auto scale_index = V::group_index(a.group_size / 8);
  typename V::reg acc[R];
  const uint8_t* rows[R];
  const float* scales[R];
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    acc[r] = V::zero();
    rows[r] = a.data + (r0 + r) * a.row_bytes;
    scales[r] = a.scales + (r0 + r) * groups;
    // The scales and biases of the rows read next, which the code prefetching does not reach.
    if (r0 + kPrefetchRows + r < a.rows)
      for (int64_t g = 0; g < groups; g += 16) {
        prefetch_line(a.scales + (r0 + kPrefetchRows + r) * groups + g);
        prefetch_line(a.biases + (r0 + kPrefetchRows + r) * groups + g);
      }
  }
  int64_t o = 0;
  for (; o + kStep <= bytes; o += kStep)
    mlx4_int8_step<V, R, false>(a, r0, {o, 2 * o >> group_shift, per_step}, rows, scales, acc,
                                scale_index);
  if (o < bytes) {
    const int64_t g = 2 * o >> group_shift;
    mlx4_int8_step<V, R, true>(a, r0, {o, g, std::min(per_step, groups - g)}, rows, scales, acc,
                               scale_index);
  }
  add_bias_terms<V, R>(a, r0, groups, acc);
  store_rows<V, R>(a, r0, acc);
}

// Q4_0 blocks: an f16 scale d, then 16 bytes whose low nibbles are elements 0-15 and high
// nibbles 16-31; w = d * (q - 8), so a block's dot is d * (q . x - 8 * sum(x)).
// Q4_0 by table where V has one: a block's 16 weights d * (q - 8), fetched by the codes.
template <class V, int R>
void q4_0_rows_by_table(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  static_assert(W == 16, "a Q4_0 block's 16 code bytes fill one load");
  const int64_t blocks = a.cols / 32;
  typename V::reg lo[R], hi[R];
  const uint8_t* rows[R];
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    lo[r] = hi[r] = V::zero();
    rows[r] = a.data + (r0 + r) * a.row_bytes;
  }
  const auto centered = V::add(V::codes(), V::set1(-8.0f));
  for (int64_t b = 0; b < blocks; ++b) {
    const float* xb = a.x + 32 * b;
    prefetch_next_rows<R>(a, r0, 18 * b, 18);
    const auto xl = V::load(xb), xh = V::load(xb + 16);
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + 18 * b;
      const auto table = V::mul(centered, V::set1(half_at(a, block)));
      const auto codes = V::load_u8(block + 2);
      lo[r] = V::fmadd(V::lookup_low(codes, table), xl, lo[r]);
      hi[r] = V::fmadd(V::lookup_high(codes, table), xh, hi[r]);
    }
  }
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) lo[r] = V::add(lo[r], hi[r]);
  store_rows<V, R>(a, r0, lo);
}

template <class V, int R>
void q4_0_rows_at(const RowsArgs& a, int64_t r0) {
  if constexpr (V::kCodeTable) return q4_0_rows_by_table<V, R>(a, r0);
  constexpr int W = V::W;
  const int64_t blocks = a.cols / 32;
  typename V::reg acc[R];
  float offset_part[R] = {};
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    typename V::reg lo[R], hi[R];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) lo[r] = hi[r] = V::zero();
    const float* xb = a.x + 32 * b;
    prefetch_next_rows<R>(a, r0, 18 * b, 18);
    for (int k = 0; k < 16; k += W) {
      const auto xl = V::load(xb + k), xh = V::load(xb + 16 + k);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const auto codes = V::load_u8(rows[r] + 18 * b + 2 + k);
        lo[r] = V::fmadd(V::low_nibble(codes), xl, lo[r]);
        hi[r] = V::fmadd(V::high_nibble(codes), xh, hi[r]);
      }
    }
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const float d = half_at(a, rows[r] + 18 * b);
      acc[r] = V::fmadd(V::add(lo[r], hi[r]), V::set1(d), acc[r]);
      offset_part[r] += d * a.sums[b];
    }
  }
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r)
    store_row(a.y, r0 + r, V::hsum(acc[r]) - 8.0f * offset_part[r], a.beta);
}

// Q8_0 blocks: an f16 scale d, then 32 signed codes; w = d * q.
template <class V, int R>
void q8_0_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  const int64_t blocks = a.cols / 32;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    typename V::reg part[R];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) part[r] = V::zero();
    const float* xb = a.x + 32 * b;
    prefetch_next_rows<R>(a, r0, 34 * b, 34);
    for (int k = 0; k < 32; k += W) {
      const auto xk = V::load(xb + k);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r)
        part[r] = V::fmadd(V::to_float(V::load_s8(rows[r] + 34 * b + 2 + k)), xk, part[r]);
    }
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r)
      acc[r] = V::fmadd(part[r], V::set1(half_at(a, rows[r] + 34 * b)), acc[r]);
  }
  store_rows<V, R>(a, r0, acc);
}

// The 32-element ggml blocks with a fifth bit or a minimum: Q4_1 (d, m, 16 code bytes), Q5_0
// (d, 32 high bits, 16 code bytes; w = d * (q - 16)) and Q5_1 (d, m, 32 high bits, 16 bytes).
// Byte j holds elements j (low nibble) and j + 16 (high nibble), as in Q4_0; bit j of the high
// word is element j's fifth bit. A block's dot is d * (q . x) + offset * sum(x), the offset being
// m (Q4_1, Q5_1) or -16 d (Q5_0); the sums of x per block come precomputed.
struct Q4_1Layout {
  static constexpr int kBytes = 20, kCodes = 4;
  static constexpr bool kMin = true, kHighBits = false;
};
struct Q5_0Layout {
  static constexpr int kBytes = 22, kCodes = 6;
  static constexpr bool kMin = false, kHighBits = true;
};
struct Q5_1Layout {
  static constexpr int kBytes = 24, kCodes = 8;
  static constexpr bool kMin = true, kHighBits = true;
};

// Where V has 32-byte operations (AVX2: gemv_avx2_ops.h), a block with fifth bits becomes its 32
// codes as bytes in element order at once (the nibbles, and the high word spread over the bytes),
// widened a quarter at a time: 26 vector operations a block and row against 40 with the bits
// spread lane by lane (a broadcast, a variable shift, a mask and an or for each 8 codes).
template <class V>
concept HasByteBlocks = requires(typename V::ireg v) {
  V::bit_bytes16(0u);
  V::template byte_quarter<0>(v);
};

// A 32-element block's codes as bytes in element order, fifth bits included (HasByteBlocks V).
template <class V, class L>
[[gnu::always_inline]] inline typename V::ireg block_code_bytes(const uint8_t* block) {
  auto codes = V::nibbles16(block + L::kCodes);
  if constexpr (L::kHighBits) {
    uint32_t qh;
    std::memcpy(&qh, block + L::kCodes - 4, 4);
    codes = V::ior(codes, V::bit_bytes16(qh));
  }
  return codes;
}

template <class V, class L, int R>
[[gnu::always_inline]] inline void q32_block_by_bytes(const float* xb,
                                                      const uint8_t* const (&block)[R],
                                                      typename V::reg (&lo)[R],
                                                      typename V::reg (&hi)[R]) {
  const auto x0 = V::load(xb), x1 = V::load(xb + 8), x2 = V::load(xb + 16), x3 = V::load(xb + 24);
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    const auto codes = block_code_bytes<V, L>(block[r]);
    lo[r] = V::fmadd(V::to_float(V::template byte_quarter<0>(codes)), x0, lo[r]);
    hi[r] = V::fmadd(V::to_float(V::template byte_quarter<1>(codes)), x1, hi[r]);
    lo[r] = V::fmadd(V::to_float(V::template byte_quarter<2>(codes)), x2, lo[r]);
    hi[r] = V::fmadd(V::to_float(V::template byte_quarter<3>(codes)), x3, hi[r]);
  }
}

template <class V, class L, int R>
void q32_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  const int64_t blocks = a.cols / 32;
  typename V::reg acc[R];
  float offset_part[R] = {};
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    typename V::reg lo[R], hi[R];
    uint32_t qh[R] = {};
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      lo[r] = hi[r] = V::zero();
      if constexpr (L::kHighBits && !HasByteBlocks<V>)
        std::memcpy(&qh[r], rows[r] + L::kBytes * b + L::kCodes - 4, 4);
    }
    const float* xb = a.x + 32 * b;
    prefetch_next_rows<R>(a, r0, L::kBytes * b, L::kBytes);
    if constexpr (L::kHighBits && HasByteBlocks<V>) {
      const uint8_t* block[R];
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) block[r] = rows[r] + L::kBytes * b;
      q32_block_by_bytes<V, L, R>(xb, block, lo, hi);
    } else {
      for (int k = 0; k < 16; k += W) {
        const auto xl = V::load(xb + k), xh = V::load(xb + 16 + k);
        LORA_GEMV_UNROLL
        for (int r = 0; r < R; ++r) {
          const auto codes = V::load_u8(rows[r] + L::kBytes * b + L::kCodes + k);
          auto cl = V::and15(codes), ch = V::shr4(codes);
          if constexpr (L::kHighBits) {
            cl = V::ior(cl, V::bit_lanes16(qh[r] >> k));
            ch = V::ior(ch, V::bit_lanes16(qh[r] >> (16 + k)));
          }
          lo[r] = V::fmadd(V::to_float(cl), xl, lo[r]);
          hi[r] = V::fmadd(V::to_float(ch), xh, hi[r]);
        }
      }
    }
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + L::kBytes * b;
      const float d = half_at(a, block);
      const float offset = L::kMin ? half_at(a, block + 2) : -16.0f * d;
      acc[r] = V::fmadd(V::add(lo[r], hi[r]), V::set1(d), acc[r]);
      offset_part[r] += offset * a.sums[b];
    }
  }
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) store_row(a.y, r0 + r, V::hsum(acc[r]) + offset_part[r], a.beta);
}

// Q4_K: 256-element blocks of 144 bytes: d and dmin (f16), 12 bytes of 6-bit scales and mins
// for 8 sub-blocks of 32, then 128 code bytes. Each 32 bytes hold sub-block 2p in their low
// nibbles and 2p + 1 in their high ones; w = d * sc * q - dmin * m, so a sub-block's dot is
// d * sc * (q . x) - dmin * m * sum(x) (sums of x per 32 precomputed).
inline void k_scale_min(int j, const uint8_t* s, int* sc, int* mn) {
  if (j < 4) {
    *sc = s[j] & 63;
    *mn = s[j + 4] & 63;
  } else {
    *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    *mn = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// Q5_K is Q4_K with a fifth bit per element: 32 bytes after the scales (bit j of byte l is element
// l of sub-block j) come before the 128 code bytes (176-byte blocks).
template <class V, int R, bool kFifthBit = false>
void q4_k_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  constexpr int64_t kBlockBytes = kFifthBit ? 176 : 144, kCodesAt = kFifthBit ? 48 : 16;
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  float offset_part[R] = {};
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, kBlockBytes * b, kBlockBytes);
    for (int p = 0; p < 4; ++p) {
      const float* x0 = a.x + 256 * b + 64 * p;
      typename V::reg lo[R], hi[R];
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) lo[r] = hi[r] = V::zero();
      for (int k = 0; k < 32; k += W) {
        const auto xl = V::load(x0 + k), xh = V::load(x0 + 32 + k);
        LORA_GEMV_UNROLL
        for (int r = 0; r < R; ++r) {
          const uint8_t* block = rows[r] + kBlockBytes * b;
          const auto codes = V::load_u8(block + kCodesAt + 32 * p + k);
          auto cl = V::and15(codes), ch = V::shr4(codes);
          if constexpr (kFifthBit) {
            const auto h = V::load_u8(block + 16 + k);
            cl = V::ior(cl, V::template lane_bit_to<4>(h, 2 * p));
            ch = V::ior(ch, V::template lane_bit_to<4>(h, 2 * p + 1));
          }
          lo[r] = V::fmadd(V::to_float(cl), xl, lo[r]);
          hi[r] = V::fmadd(V::to_float(ch), xh, hi[r]);
        }
      }
      const float* sums = a.sums + 8 * b + 2 * p;
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* block = rows[r] + kBlockBytes * b;
        const float d = half_at(a, block), dmin = half_at(a, block + 2);
        int sc0, m0, sc1, m1;
        k_scale_min(2 * p, block + 4, &sc0, &m0);
        k_scale_min(2 * p + 1, block + 4, &sc1, &m1);
        acc[r] = V::fmadd(lo[r], V::set1(d * float(sc0)), acc[r]);
        acc[r] = V::fmadd(hi[r], V::set1(d * float(sc1)), acc[r]);
        offset_part[r] += dmin * (float(m0) * sums[0] + float(m1) * sums[1]);
      }
    }
  }
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) store_row(a.y, r0 + r, V::hsum(acc[r]) - offset_part[r], a.beta);
}

// Q6_K: 256-element blocks of 210 bytes: 128 bytes of low nibbles, 64 of high bit pairs, 16
// int8 scales (one per 16 elements), d (f16); w = d * sc * (q - 32). Each 128-element half reads
// 64 low-nibble bytes and 32 high-bit bytes: byte l gives elements l, l + 32, l + 64, l + 96.
// A 16-element group's dot is d * sc * (q . x - 32 * sum(x)) (sums of x per 16 precomputed).
template <class V, int R>
void q6_k_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  float offset_part[R] = {};
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, 210 * b, 210);
    for (int half = 0; half < 2; ++half) {
      const float* xh = a.x + 256 * b + 128 * half;
      for (int l0 = 0; l0 < 32; l0 += 16) {
        typename V::reg part[R][4];
        LORA_GEMV_UNROLL
        for (int r = 0; r < R; ++r) part[r][0] = part[r][1] = part[r][2] = part[r][3] = V::zero();
        for (int k = l0; k < l0 + 16; k += W) {
          const auto x1 = V::load(xh + k), x2 = V::load(xh + 32 + k);
          const auto x3 = V::load(xh + 64 + k), x4 = V::load(xh + 96 + k);
          LORA_GEMV_UNROLL
          for (int r = 0; r < R; ++r) {
            const uint8_t* block = rows[r] + 210 * b;
            const auto la = V::load_u8(block + 64 * half + k);
            const auto lb = V::load_u8(block + 64 * half + 32 + k);
            const auto h = V::load_u8(block + 128 + 32 * half + k);
            part[r][0] = V::fmadd(V::to_float(V::ior(V::and15(la), V::template high_pair<4>(h))),
                                  x1, part[r][0]);
            part[r][1] = V::fmadd(V::to_float(V::ior(V::and15(lb), V::template high_pair<2>(h))),
                                  x2, part[r][1]);
            part[r][2] = V::fmadd(V::to_float(V::ior(V::shr4(la), V::template high_pair<0>(h))), x3,
                                  part[r][2]);
            part[r][3] = V::fmadd(V::to_float(V::ior(V::shr4(lb), V::template high_pair<-2>(h))),
                                  x4, part[r][3]);
          }
        }
        // Groups of 16: l0 / 16 + 2 q within this half's 8 scales.
        const float* sums = a.sums + 16 * b + 8 * half + l0 / 16;
        LORA_GEMV_UNROLL
        for (int r = 0; r < R; ++r) {
          const uint8_t* block = rows[r] + 210 * b;
          const auto* sc = reinterpret_cast<const int8_t*>(block + 192 + 8 * half + l0 / 16);
          const float d = half_at(a, block + 208);
          LORA_GEMV_UNROLL
          for (int q = 0; q < 4; ++q) {
            const float s = d * float(sc[2 * q]);
            acc[r] = V::fmadd(part[r][q], V::set1(s), acc[r]);
            offset_part[r] += s * sums[2 * q];
          }
        }
      }
    }
  }
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r)
    store_row(a.y, r0 + r, V::hsum(acc[r]) - 32.0f * offset_part[r], a.beta);
}

// A Q3_K block's 16 six-bit scales (before their -32), one byte each, sub-block j of a half in
// byte j of that half's word: the low nibbles of bytes 0-7 (sub-blocks 0-7) and their high nibbles
// (8-15), and a bit pair of bytes 8-11 each, sub-block k's at bits 2 (k / 4) of byte 8 + k % 4.
inline void q3_k_scale_bytes(const uint8_t* s, uint64_t* first_half, uint64_t* second_half) {
  uint64_t low;
  uint32_t high;
  std::memcpy(&low, s, 8);
  std::memcpy(&high, s + 8, 4);
  constexpr uint64_t kLow4 = 0x0f0f0f0f0f0f0f0f;
  constexpr uint32_t kLow2 = 0x03030303;
  const auto pairs = [high](int shift) {
    return uint64_t((high >> shift) & kLow2) | uint64_t((high >> (shift + 2)) & kLow2) << 32;
  };
  *first_half = (low & kLow4) | pairs(0) << 4;
  *second_half = ((low >> 4) & kLow4) | pairs(4) << 4;
}

// Q2_K: 256-element blocks of 84 bytes: 16 scale bytes (sub-block j of 16: a 4-bit scale in the
// low nibble, a 4-bit min in the high one), 64 code bytes, d and dmin (f16); w = d * sc * q -
// dmin * m, q in 0..3. Q3_K: 110 bytes: 32 bytes of third bits, 64 code bytes, 12 bytes of 6-bit
// scales (q3_k_scale_bytes), d; w = d * (sc - 32) * (q - 4), q in 0..7. Each 128-element half reads
// its 32 code bytes four times: byte l gives elements l, l + 32, l + 64, l + 96 in its bit pairs
// 0, 2, 4, 6 (and Q3_K's third bits of those are bits 4 * half + 0..3 of third-bit byte l). The
// codes are widened times 16 (a bit pair lands at bits 4-5, as high_pair moves Q6_K's), which the
// scales divide out; a 16-element group's offset (-dmin * m or -4 d sc) meets x's sum.
template <class V, int R, bool kThirdBit>
void q2_q3_k_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  constexpr int64_t kBlockBytes = kThirdBit ? 110 : 84, kCodesAt = kThirdBit ? 32 : 16;
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  float offset_part[R] = {};
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, kBlockBytes * b, kBlockBytes);
    for (int half = 0; half < 2; ++half) {
      const float* xh = a.x + 256 * b + 128 * half;
      for (int l0 = 0; l0 < 32; l0 += 16) {
        typename V::reg part[R][4];
        LORA_GEMV_UNROLL
        for (int r = 0; r < R; ++r) part[r][0] = part[r][1] = part[r][2] = part[r][3] = V::zero();
        for (int k = l0; k < l0 + 16; k += W) {
          const auto x1 = V::load(xh + k), x2 = V::load(xh + 32 + k);
          const auto x3 = V::load(xh + 64 + k), x4 = V::load(xh + 96 + k);
          LORA_GEMV_UNROLL
          for (int r = 0; r < R; ++r) {
            const uint8_t* block = rows[r] + kBlockBytes * b;
            const auto q = V::load_u8(block + kCodesAt + 32 * half + k);
            typename V::ireg codes[4] = {V::template high_pair<4>(q), V::template high_pair<2>(q),
                                         V::template high_pair<0>(q), V::template high_pair<-2>(q)};
            if constexpr (kThirdBit) {
              const auto h = V::load_u8(block + k);
              LORA_GEMV_UNROLL
              for (int j = 0; j < 4; ++j)
                codes[j] = V::ior(codes[j], V::template lane_bit_to<6>(h, 4 * half + j));
            }
            part[r][0] = V::fmadd(V::to_float(codes[0]), x1, part[r][0]);
            part[r][1] = V::fmadd(V::to_float(codes[1]), x2, part[r][1]);
            part[r][2] = V::fmadd(V::to_float(codes[2]), x3, part[r][2]);
            part[r][3] = V::fmadd(V::to_float(codes[3]), x4, part[r][3]);
          }
        }
        // Groups of 16: l0 / 16 + 2 j within this half's 8.
        const int first = 8 * half + l0 / 16;
        const float* sums = a.sums + 16 * b + first;
        LORA_GEMV_UNROLL
        for (int r = 0; r < R; ++r) {
          const uint8_t* block = rows[r] + kBlockBytes * b;
          float scale[4], offset[4];
          if constexpr (kThirdBit) {
            uint64_t sc[2];
            q3_k_scale_bytes(block + 96, &sc[0], &sc[1]);
            const float d = half_at(a, block + 108);
            for (int j = 0; j < 4; ++j) {
              scale[j] = d * float(int((sc[half] >> (8 * (2 * j + l0 / 16))) & 63) - 32);
              offset[j] = -4.0f * scale[j];
            }
          } else {
            const float d = half_at(a, block + 80), dmin = half_at(a, block + 82);
            for (int j = 0; j < 4; ++j) {
              const uint8_t sm = block[first + 2 * j];
              scale[j] = d * float(sm & 15);
              offset[j] = -dmin * float(sm >> 4);
            }
          }
          LORA_GEMV_UNROLL
          for (int j = 0; j < 4; ++j) {
            acc[r] = V::fmadd(part[r][j], V::set1(scale[j] * (1.0f / 16)), acc[r]);
            offset_part[r] += offset[j] * sums[2 * j];
          }
        }
      }
    }
  }
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) store_row(a.y, r0 + r, V::hsum(acc[r]) + offset_part[r], a.beta);
}

// The 8 scales of a Q2_K or Q3_K block's half (one per 16 elements, on 8 lanes) times d, with the
// half's offsets (-dmin * m, or -4 times the scale) times x's 8 sums per 16 added to acc.
template <class V, bool kThirdBit>
[[gnu::always_inline]] inline typename V::reg low_k_half_scales(const RowsArgs& a,
                                                                const uint8_t* block, int half,
                                                                typename V::reg sums,
                                                                typename V::reg& acc) {
  static_assert(V::W == 8, "a half-block's 8 scales are one vector");
  if constexpr (kThirdBit) {
    uint64_t sc[2];
    q3_k_scale_bytes(block + 96, &sc[0], &sc[1]);
    const auto scales = V::mul(V::add(V::to_float(V::byte_lanes(sc[half])), V::set1(-32.0f)),
                               V::set1(half_at(a, block + 108)));
    acc = V::fmadd(scales, V::mul(sums, V::set1(-4.0f)), acc);
    return scales;
  } else {
    const auto scale_min = V::load_u8(block + 8 * half);
    const auto mins = V::mul(V::to_float(V::shr4(scale_min)), V::set1(-half_at(a, block + 82)));
    acc = V::fmadd(mins, sums, acc);
    return V::mul(V::to_float(V::and15(scale_min)), V::set1(half_at(a, block + 80)));
  }
}

// Piece k of a Q2_K or Q3_K half as 32 code bytes: bit pair 2k of its code bytes q, and Q3_K's
// third bits (bit 4 * half + k of the block's first 32 bytes) as 4.
template <class V, bool kThirdBit>
[[gnu::always_inline]] inline typename V::ireg low_k_piece_codes(typename V::ireg q,
                                                                 const uint8_t* block, int half,
                                                                 int k) {
  const auto codes = V::byte_bit_pair(q, 2 * k);
  if constexpr (kThirdBit)
    return V::ior(codes, V::template byte_bit_to<2>(V::load_bytes(block), 4 * half + k));
  else
    return codes;
}

// Q2_K and Q3_K where V has 32-byte operations: a half's 32 code bytes become piece k's 32 codes
// (elements 32k .. 32k + 31 of the half) as bytes at once, a bit pair and a third bit for all 32,
// then widened a quarter at a time; on 8-lane values this took 36 vector operations per 32
// elements of Q3_K (shift, mask and or of each lane's bits), here about 20.
template <class V, int R, bool kThirdBit>
void q2_q3_k_rows_by_bytes(const RowsArgs& a, int64_t r0) {
  constexpr int64_t kBlockBytes = kThirdBit ? 110 : 84, kCodesAt = kThirdBit ? 32 : 16;
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, kBlockBytes * b, kBlockBytes);
    for (int half = 0; half < 2; ++half) {
      const float* x = a.x + 256 * b + 128 * half;
      const auto sums = V::load(a.sums + 16 * b + 8 * half);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* block = rows[r] + kBlockBytes * b;
        float scale[8];
        V::store(scale, low_k_half_scales<V, kThirdBit>(a, block, half, sums, acc[r]));
        const auto q = V::load_bytes(block + kCodesAt + 32 * half);
        LORA_GEMV_UNROLL
        for (int k = 0; k < 4; ++k) {
          const auto codes = low_k_piece_codes<V, kThirdBit>(q, block, half, k);
          const float* xk = x + 32 * k;
          auto first = V::mul(V::to_float(V::template byte_quarter<0>(codes)), V::load(xk));
          first = V::fmadd(V::to_float(V::template byte_quarter<1>(codes)), V::load(xk + 8), first);
          auto second = V::mul(V::to_float(V::template byte_quarter<2>(codes)), V::load(xk + 16));
          second =
              V::fmadd(V::to_float(V::template byte_quarter<3>(codes)), V::load(xk + 24), second);
          acc[r] = V::fmadd(first, V::set1(scale[2 * k]), acc[r]);
          acc[r] = V::fmadd(second, V::set1(scale[2 * k + 1]), acc[r]);
        }
      }
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// Q2_K and Q3_K rows: by bytes where V has them.
template <class V, int R, bool kThirdBit>
void q2_q3_k_rows(const RowsArgs& a, int64_t r0) {
  if constexpr (HasByteBlocks<V>)
    q2_q3_k_rows_by_bytes<V, R, kThirdBit>(a, r0);
  else
    q2_q3_k_rows_at<V, R, kThirdBit>(a, r0);
}

// f32 rows (also the rows other storages widen into a buffer first).
template <class V, int R>
void f32_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int W = V::W;
  typename V::reg even[R], odd[R];
  const float* rows[R];
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    even[r] = odd[r] = V::zero();
    rows[r] = reinterpret_cast<const float*>(a.data + (r0 + r) * a.row_bytes);
  }
  int64_t c = 0;
  for (; c + 2 * W <= a.cols; c += 2 * W) {
    const auto x0 = V::load(a.x + c), x1 = V::load(a.x + c + W);
    prefetch_next_rows<R>(a, r0, c * 4, 2 * W * 4);
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      even[r] = V::fmadd(V::load(rows[r] + c), x0, even[r]);
      odd[r] = V::fmadd(V::load(rows[r] + c + W), x1, odd[r]);
    }
  }
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    float dot = V::hsum(V::add(even[r], odd[r]));
    for (int64_t t = c; t < a.cols; ++t) dot += rows[r][t] * a.x[t];
    store_row(a.y, r0 + r, dot, a.beta);
  }
}

// Rows [r0, r1): four at a time, then one by one.
template <void (*Four)(const RowsArgs&, int64_t), void (*One)(const RowsArgs&, int64_t)>
void rows_in_fours(const RowsArgs& a, int64_t r0, int64_t r1) {
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) Four(a, r);
  for (; r < r1; ++r) One(a, r);
}

// tile_gemm's block: R rows of C by NV vectors of its columns. The R x NV accumulators stay in
// registers over the whole inner dimension; each step loads NV vectors of B and broadcasts R
// elements of A for R * NV multiply-adds, so the loop is bound by the multiply-adds, not by loads.
// A is read where it lies, with any row and column strides.
template <class V, int R, int NV>
void tile_block(const lora::gemv::TileArgs& t, int64_t i0, int64_t j0) {
  using reg = typename V::reg;
  reg acc[R][NV];
  _Pragma("GCC unroll 32") for (int r = 0; r < R; ++r)
      _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) acc[r][j] = V::zero();
  const float* a = t.a + i0 * t.a_row;
  const float* b = t.b + j0;
  for (int64_t p = 0; p < t.k; ++p) {
    reg xv[NV];
    _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) xv[j] = V::load(b + p * t.ldb + j * V::W);
    _Pragma("GCC unroll 32") for (int r = 0; r < R; ++r) {
      const reg w = V::set1(a[r * t.a_row + p * t.a_col]);
      _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) acc[r][j] =
          V::fmadd(w, xv[j], acc[r][j]);
    }
  }
  const reg alpha = V::set1(t.alpha);
  _Pragma("GCC unroll 32") for (int r = 0; r < R; ++r)
      _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) {
    float* to = t.c + (i0 + r) * t.ldc + j0 + j * V::W;
    const reg v = V::mul(alpha, acc[r][j]);
    V::store(to, t.accumulate ? V::add(v, V::load(to)) : v);
  }
}

// Rows of C per tile_gemm block: with two vectors of columns, as many accumulators as the
// registers hold next to the B vectors and the broadcast A element (AVX-512: 24 of 32 registers;
// AVX2: 12 of 16).
template <class V>
inline constexpr int kTileRows = V::W >= 16  ? 12
                                 : V::W >= 8 ? 6
                                             : 4;

// One panel of NV vectors of C's columns down all its rows: in blocks of kTileRows rows,
// then of 4, then one at a time. The panel of B stays in L1 while A's rows stream past.
template <class V, int NV>
void tile_panel(const lora::gemv::TileArgs& t, int64_t j0) {
  constexpr int R = kTileRows<V>;
  int64_t i = 0;
  for (; i + R <= t.m; i += R) tile_block<V, R, NV>(t, i, j0);
  for (; i + 4 <= t.m; i += 4) tile_block<V, 4, NV>(t, i, j0);
  for (; i < t.m; ++i) tile_block<V, 1, NV>(t, i, j0);
}

template <class V>
void tile_gemm(const lora::gemv::TileArgs& t) {
  int64_t j = 0;
  for (; j + 2 * V::W <= t.n; j += 2 * V::W) tile_panel<V, 2>(t, j);
  if (j < t.n) tile_panel<V, 1>(t, j);
}

template <class V>
constexpr lora::gemv::Kernels make_kernels() {
  return {&permute_for_nibbles<V>,
          &rows_in_fours<&mlx4_rows_at<V, 4>, &mlx4_rows_at<V, 1>>,
          &rows_in_fours<&mlx8_rows_at<V, 4>, &mlx8_rows_at<V, 1>>,
          &rows_in_fours<&mlx4_int8_rows_at<V, 4>, &mlx4_int8_rows_at<V, 1>>,
          &rows_in_fours<&q4_0_rows_at<V, 4>, &q4_0_rows_at<V, 1>>,
          &rows_in_fours<&q8_0_rows_at<V, 4>, &q8_0_rows_at<V, 1>>,
          &rows_in_fours<&f32_rows_at<V, 4>, &f32_rows_at<V, 1>>,
          &rows_in_fours<&q32_rows_at<V, Q4_1Layout, 4>, &q32_rows_at<V, Q4_1Layout, 1>>,
          &rows_in_fours<&q32_rows_at<V, Q5_0Layout, 4>, &q32_rows_at<V, Q5_0Layout, 1>>,
          &rows_in_fours<&q32_rows_at<V, Q5_1Layout, 4>, &q32_rows_at<V, Q5_1Layout, 1>>,
          &rows_in_fours<&q4_k_rows_at<V, 4>, &q4_k_rows_at<V, 1>>,
          &rows_in_fours<&q4_k_rows_at<V, 4, true>, &q4_k_rows_at<V, 1, true>>,
          &rows_in_fours<&q6_k_rows_at<V, 4>, &q6_k_rows_at<V, 1>>,
          &rows_in_fours<&q2_q3_k_rows<V, 4, false>, &q2_q3_k_rows<V, 1, false>>,
          &rows_in_fours<&q2_q3_k_rows<V, 4, true>, &q2_q3_k_rows<V, 1, true>>,
          &tile_gemm<V>,
          &cached_scores<V>,
          &cached_values<V>,
          kTileRows<V>,
          V::W};
}

}  // namespace
