// The non-linear 4-bit ggml blocks against x in f32, or rounded to int8 in the layout of
// kernels_gemv_int8_blocks.h: IQ4_NL, IQ4_XS, and MXFP4 (IQ4_NL's layout with an E8M0 scale byte
// and its own levels). IQ4_NL is Q4_0's layout (an f16 scale d, then 16 code bytes: element
// j in the low nibble of byte j, element j + 16 in its high one); IQ4_XS holds 256 elements as
// eight such 32-element groups of code bytes under one d, group j weighted d * (l_j - 32) by a
// 6-bit l_j. A code stands for one of the 16 kIq4Values levels, not a count of steps, so a byte
// shuffle looks up a group's 32 levels at once (one instruction, where widening the codes to floats
// and looking them up lane by lane took most of the time); after it a block is Q8_0's: signed
// levels times x, and no offset to meet a sum of x. Written over a V of 32-byte integer vectors
// (gemv_avx2_ops.h), which the AVX2 and AVX-512 copies both use; the portable baseline has no
// shuffle and widens IQ4 rows for its f32 kernel. Internal linkage, as kernels_gemv.h.
#pragma once
#include <cstdint>
#include <cstring>

#include "autograd/gguf_quant.h"
#include "autograd/kernels/kernels_gemv.h"

namespace {

inline constexpr int64_t kIq4XsBytes = 136;

// The 32-value blocks of 16 code bytes whose codes index a table of 16 levels: IQ4_NL (an f16
// scale) and MXFP4 (an E8M0 scale byte, gguf_quant.h, over the doubled E2M1 values).
struct Iq4NlLayout {
  static constexpr int64_t kBytes = 18, kCodes = 2;
  static constexpr const int8_t* kLevels = lora::kIq4Values;
  static float scale(const RowsArgs& a, const uint8_t* block) { return half_at(a, block); }
};
struct Mxfp4Layout {
  static constexpr int64_t kBytes = 17, kCodes = 1;
  static constexpr const int8_t* kLevels = lora::kMxfp4Levels;
  static float scale(const RowsArgs&, const uint8_t* block) { return lora::e8m0_half(block[0]); }
};

// The levels of the 32 codes in the 16 bytes at p, as signed bytes in element order.
template <class V>
[[gnu::always_inline]] inline typename V::ireg iq4_levels(const uint8_t* p,
                                                          typename V::ireg table) {
  return V::look_up(table, V::nibbles16(p));
}

// 32 elements of x as four vectors.
template <class V>
[[gnu::always_inline]] inline void load_x32(const float* x, typename V::reg (&out)[4]) {
  for (int q = 0; q < 4; ++q) out[q] = V::load(x + 8 * q);
}

// 32 levels times 32 elements of x, in two chains of multiply-adds.
template <class V>
[[gnu::always_inline]] inline typename V::reg iq4_dot_f32(typename V::ireg levels,
                                                          const typename V::reg (&x)[4]) {
  auto lo = V::mul(V::to_float(V::template signed_byte_quarter<0>(levels)), x[0]);
  auto hi = V::mul(V::to_float(V::template signed_byte_quarter<1>(levels)), x[1]);
  lo = V::fmadd(V::to_float(V::template signed_byte_quarter<2>(levels)), x[2], lo);
  hi = V::fmadd(V::to_float(V::template signed_byte_quarter<3>(levels)), x[3], hi);
  return V::add(lo, hi);
}

// An IQ4_XS block's eight 6-bit l_j, group j in byte j: the low four bits are nibble j % 2 of
// byte j / 2 at block + 4, the high two bits 2j and 2j + 1 of the 16-bit word at block + 2. Each
// half is spread over the bytes by shifts and masks, a few operations where eight extractions
// stored one by one would stall the vector load that reads them back.
inline uint64_t iq4_xs_scale_bytes(const uint8_t* block) {
  uint32_t low_bits = 0;
  uint16_t high_bits = 0;
  std::memcpy(&low_bits, block + 4, 4);
  std::memcpy(&high_bits, block + 2, 2);
  uint64_t low = low_bits;
  low = (low | low << 16) & 0x0000ffff0000ffffULL;  // byte k in 16-bit slot k
  low = (low | low << 8) & 0x00ff00ff00ff00ffULL;
  low = (low | low << 4) & 0x0f0f0f0f0f0f0f0fULL;  // its high nibble moved to the next byte
  uint64_t high = high_bits;
  high = (high | high << 24) & 0x000000ff000000ffULL;  // four pairs in each 32-bit half
  high = (high | high << 12) & 0x000f000f000f000fULL;
  high = (high | high << 6) & 0x0303030303030303ULL;
  return low | high << 4;
}

// An IQ4_XS block's eight group weights d * (l_j - 32), group j in lane j.
template <class V>
[[gnu::always_inline]] inline typename V::reg iq4_xs_factors(const RowsArgs& a,
                                                             const uint8_t* block) {
  const auto l = V::to_float(V::byte_lanes(iq4_xs_scale_bytes(block)));
  return V::mul(V::add(l, V::set1(-32.0f)), V::set1(half_at(a, block)));
}

template <class V, class L, int R>
void level_table_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a 32-element block is one vector of bytes");
  const auto table = V::byte_table(L::kLevels);
  const int64_t blocks = a.cols / 32;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    typename V::reg x[4];
    load_x32<V>(a.x + 32 * b, x);
    prefetch_next_rows<R>(a, r0, L::kBytes * b, L::kBytes);
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + L::kBytes * b;
      const auto dot = iq4_dot_f32<V>(iq4_levels<V>(block + L::kCodes, table), x);
      acc[r] = V::fmadd(dot, V::set1(L::scale(a, block)), acc[r]);
    }
  }
  store_rows<V, R>(a, r0, acc);
}

template <class V, int R>
void iq4_xs_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a block's 8 group weights are one vector");
  const auto table = V::byte_table(lora::kIq4Values);
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, kIq4XsBytes * b, kIq4XsBytes);
    alignas(32) float factors[R][8];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r)
      V::store(factors[r], iq4_xs_factors<V>(a, rows[r] + kIq4XsBytes * b));
    for (int j = 0; j < 8; ++j) {
      typename V::reg x[4];
      load_x32<V>(a.x + 256 * b + 32 * j, x);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* codes = rows[r] + kIq4XsBytes * b + 8 + 16 * j;
        const auto dot = iq4_dot_f32<V>(iq4_levels<V>(codes, table), x);
        acc[r] = V::fmadd(dot, V::set1(factors[r][j]), acc[r]);
      }
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// Against int8 x: a 32-element group's dot is dx * (levels . xq), the levels' signs moved onto x
// as for Q8_0 (dot_signed_bytes; |level| <= 127, so a byte pair's sum fits 16 bits).
template <class V, class L, int R>
void level_table_int8_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a 32-element block is one vector of bytes");
  const auto table = V::byte_table(L::kLevels);
  const int64_t blocks = a.cols / 32;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    const auto xq = V::load_bytes(a.x_low + 32 * b);
    const float dx = a.x_scales[b];
    prefetch_next_rows<R>(a, r0, L::kBytes * b, L::kBytes);
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + L::kBytes * b;
      const auto levels = iq4_levels<V>(block + L::kCodes, table);
      const auto dot = V::to_float(V::dot_signed_bytes(levels, xq));
      acc[r] = V::fmadd(dot, V::set1(L::scale(a, block) * dx), acc[r]);
    }
  }
  store_rows<V, R>(a, r0, acc);
}

template <class V, int R>
void iq4_xs_int8_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a block's 8 group weights are one vector");
  const auto table = V::byte_table(lora::kIq4Values);
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, kIq4XsBytes * b, kIq4XsBytes);
    const auto dx = V::load(a.x_scales + 8 * b);
    alignas(32) float factors[R][8];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r)
      V::store(factors[r], V::mul(iq4_xs_factors<V>(a, rows[r] + kIq4XsBytes * b), dx));
    for (int j = 0; j < 8; ++j) {
      const auto xq = V::load_bytes(a.x_low + 256 * b + 32 * j);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* codes = rows[r] + kIq4XsBytes * b + 8 + 16 * j;
        const auto dot = V::to_float(V::dot_signed_bytes(iq4_levels<V>(codes, table), xq));
        acc[r] = V::fmadd(dot, V::set1(factors[r][j]), acc[r]);
      }
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// `k` with the IQ4 kernels on V.
template <class V>
constexpr lora::gemv::Kernels with_iq4_blocks(lora::gemv::Kernels k) {
  k.iq4_nl = &rows_in_fours<&level_table_rows_at<V, Iq4NlLayout, 4>,
                            &level_table_rows_at<V, Iq4NlLayout, 1>>;
  k.mxfp4 = &rows_in_fours<&level_table_rows_at<V, Mxfp4Layout, 4>,
                           &level_table_rows_at<V, Mxfp4Layout, 1>>;
  k.iq4_xs = &rows_in_fours<&iq4_xs_rows_at<V, 4>, &iq4_xs_rows_at<V, 1>>;
  k.iq4_nl_int8 = &rows_in_fours<&level_table_int8_rows_at<V, Iq4NlLayout, 4>,
                                 &level_table_int8_rows_at<V, Iq4NlLayout, 1>>;
  k.mxfp4_int8 = &rows_in_fours<&level_table_int8_rows_at<V, Mxfp4Layout, 4>,
                                &level_table_int8_rows_at<V, Mxfp4Layout, 1>>;
  k.iq4_xs_int8 = &rows_in_fours<&iq4_xs_int8_rows_at<V, 4>, &iq4_xs_int8_rows_at<V, 1>>;
  return k;
}

}  // namespace
