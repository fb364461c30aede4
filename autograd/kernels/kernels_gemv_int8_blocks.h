// The ggml block types with 2 to 8-bit codes against x rounded to int8 (GemvActivations::Int8),
// written over an 8-lane V whose integer vectors are 32 bytes (gemv_avx2_ops.h; the AVX-512 copy
// has 64-byte forms, gemv_avx512_int8_blocks.h, and uses these for their one-row tails). x comes in
// element order as int8, each 32 elements with their own step dx (RowsArgs::x_low, x_scales): a
// 32-element piece's dot is then dx * (codes . xq) in integer multiply-adds, 32 products in four
// vector operations, where the f32 kernels convert every code to a float and spend a multiply-add
// on each 8 (on AVX2 those conversions, not memory, set the pace of one thread). The offsets of the
// codes (Q4_0's 8, Q4_K's mins, Q6_K's 32, ...) meet the exact sums of x, as in the f32 kernels.
// Internal linkage, as kernels_gemv.h.
#pragma once
#include <cstdint>
#include <cstring>

#include "autograd/kernels/kernels_gemv.h"

namespace {

// The 32-element blocks with 4-bit codes (Q4_0, Q4_1) or 5 (Q5_0, Q5_1; layouts above
// q32_rows_at): a block's 16 code bytes become its 32 codes in element order (the fifth bits
// added from the high word), against 32 bytes of x. The offset (Q4_0's -8 d, Q5_0's -16 d, the
// others' m) meets the sum of x.
struct Q4_0Layout {
  static constexpr int kBytes = 18, kCodes = 2;
  static constexpr bool kMin = false, kHighBits = false;
};

// Layouts without fifth bits take their blocks two at a time: the two blocks' 16 code bytes side
// by side are one vector whose low nibbles meet the first 16 elements of each block's x and whose
// high nibbles the last 16. A pair then costs one widening, one integer dot and one conversion,
// and the scales, x's steps and the offsets come as vectors of two broadcast halves, in place of
// each block's scalar products and broadcast (per block, 6 vector operations instead of 10).
// Returns the blocks done.
template <class V, class L, int R>
[[gnu::always_inline]] inline int64_t q32_int8_block_pairs(const RowsArgs& a, int64_t r0,
                                                           typename V::reg (&acc)[R],
                                                           const uint8_t* const (&rows)[R]) {
  const int64_t pairs = a.cols / 64;
  for (int64_t b = 0; b < 2 * pairs; b += 2) {
    const int8_t* x = a.x_low + 32 * b;
    const auto xl = V::two_pieces(x, x + 32), xh = V::two_pieces(x + 16, x + 48);
    const auto dx = V::two_broadcasts(a.x_scales + b, a.x_scales + b + 1);
    // Each block's sum of x spread over its four lanes, times the offset where it is a constant.
    const auto sums = V::mul(V::two_broadcasts(a.sums + b, a.sums + b + 1),
                             V::set1(L::kMin ? 0.25f : -8.0f / 4.0f));
    prefetch_next_rows<R>(a, r0, L::kBytes * b, 2 * L::kBytes);
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + L::kBytes * b;
      const uint8_t* next = block + L::kBytes;
      const auto dot =
          V::to_float(V::dot_nibbles(V::two_pieces(block + L::kCodes, next + L::kCodes), xl, xh));
      const auto d = V::two_broadcasts(half_entry(a, block), half_entry(a, next));
      if constexpr (L::kMin) {
        acc[r] = V::fmadd(d, V::mul(dx, dot), acc[r]);
        const auto m = V::two_broadcasts(half_entry(a, block + 2), half_entry(a, next + 2));
        acc[r] = V::fmadd(m, sums, acc[r]);
      } else {
        acc[r] = V::fmadd(d, V::fmadd(dx, dot, sums), acc[r]);
      }
    }
  }
  return 2 * pairs;
}

template <class V, class L, int R>
void q32_int8_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a 32-element block is one vector of bytes");
  const int64_t blocks = a.cols / 32;
  typename V::reg acc[R];
  float offset_part[R] = {};
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  int64_t b = 0;
  if constexpr (!L::kHighBits) b = q32_int8_block_pairs<V, L, R>(a, r0, acc, rows);
  for (; b < blocks; ++b) {
    const auto xq = V::load_bytes(a.x_low + 32 * b);
    const float dx = a.x_scales[b], sum = a.sums[b];
    prefetch_next_rows<R>(a, r0, L::kBytes * b, L::kBytes);
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + L::kBytes * b;
      const float d = half_at(a, block);
      const auto codes = block_code_bytes<V, L>(block);
      acc[r] = V::fmadd(V::to_float(V::dot_bytes(codes, xq)), V::set1(d * dx), acc[r]);
      offset_part[r] += (L::kMin ? half_at(a, block + 2) : d) * sum;
    }
  }
  constexpr float kOffset = L::kMin ? 1.0f : L::kHighBits ? -16.0f : -8.0f;
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r)
    store_row(a.y, r0 + r, V::hsum(acc[r]) + kOffset * offset_part[r], a.beta);
}

// Q8_0: d and 32 signed codes, against 32 bytes of x.
template <class V, int R>
void q8_0_int8_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a 32-element block is one vector of bytes");
  const int64_t blocks = a.cols / 32;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    const auto xq = V::load_bytes(a.x_low + 32 * b);
    const float dx = a.x_scales[b];
    prefetch_next_rows<R>(a, r0, 34 * b, 34);
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + 34 * b;
      const auto dot = V::to_float(V::dot_signed_bytes(V::load_bytes(block + 2), xq));
      acc[r] = V::fmadd(dot, V::set1(half_at(a, block) * dx), acc[r]);
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// Q4_K and Q5_K (layouts above q4_k_rows_at): each 32 code bytes hold sub-blocks 2p (low
// nibbles) and 2p + 1 (high), 64 elements of x in order; Q5_K's fifth bits are bits 2p and
// 2p + 1 of its 32 high bytes. A row's block first gets its 8 factors d * sc_j * dx_j in one
// vector and its mins' term -dmin * m_j * sum(x_j) added in one multiply-add.
template <class V, int R, bool kFifthBit = false>
void q4_k_int8_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a block's 8 sub-blocks are one vector of factors");
  constexpr int64_t kBlockBytes = kFifthBit ? 176 : 144, kCodesAt = kFifthBit ? 48 : 16;
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, kBlockBytes * b, kBlockBytes);
    const auto dx = V::load(a.x_scales + 8 * b), sums = V::load(a.sums + 8 * b);
    typename V::reg factors[R];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + kBlockBytes * b;
      typename V::ireg sc, mn;
      V::k_scale_min_lanes(block + 4, &sc, &mn);
      const auto mins = V::mul(V::to_float(mn), V::set1(-half_at(a, block + 2)));
      acc[r] = V::fmadd(mins, sums, acc[r]);
      factors[r] = V::mul(V::mul(V::to_float(sc), V::set1(half_at(a, block))), dx);
    }
    for (int p = 0; p < 4; ++p) {
      const int8_t* x = a.x_low + 256 * b + 64 * p;
      const auto xl = V::load_bytes(x), xh = V::load_bytes(x + 32);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* block = rows[r] + kBlockBytes * b;
        const auto codes = V::load_bytes(block + kCodesAt + 32 * p);
        auto low = V::low4(codes), high = V::high4(codes);
        if constexpr (kFifthBit) {
          const auto h = V::load_bytes(block + 16);
          low = V::ior(low, V::template byte_bit_to<4>(h, 2 * p));
          high = V::ior(high, V::template byte_bit_to<4>(h, 2 * p + 1));
        }
        const auto dots = V::to_float(V::dot_bytes_halves(low, xl, high, xh));
        acc[r] = V::fmadd(dots, V::lane_pair(factors[r], p), acc[r]);
      }
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// Q6_K (layout above q6_k_rows_at): per 128-element half, codes k = 0..3 are elements 32k..32k+31
// of the half, each 32 bytes built from a nibble of the low bytes and a bit pair of the high ones;
// a code vector's lanes 0-3 (its first 16 elements) take scale 2k of the half, lanes 4-7 scale
// 2k + 1. The half's 8 scales times d make one vector, which also carries -32 * d * sc * sum(x).
template <class V, int R>
void q6_k_int8_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a half-block's 8 scales are one vector");
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, 210 * b, 210);
    for (int half = 0; half < 2; ++half) {
      const int8_t* x = a.x_low + 256 * b + 128 * half;
      const auto dx = V::pairs_of_four(a.x_scales + 8 * b + 4 * half);
      const auto offsets = V::mul(V::load(a.sums + 16 * b + 8 * half), V::set1(-32.0f));
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* block = rows[r] + 210 * b;
        const auto scales = V::mul(V::to_float(V::load_s8(block + 192 + 8 * half)),
                                   V::set1(half_at(a, block + 208)));
        acc[r] = V::fmadd(scales, offsets, acc[r]);
        const auto factors = V::mul(scales, dx);
        const auto la = V::load_bytes(block + 64 * half),
                   lb = V::load_bytes(block + 64 * half + 32);
        const auto h = V::load_bytes(block + 128 + 32 * half);
        const typename V::ireg codes[4] = {V::ior(V::low4(la), V::template top_pair<4>(h)),
                                           V::ior(V::low4(lb), V::template top_pair<2>(h)),
                                           V::ior(V::high4(la), V::template top_pair<0>(h)),
                                           V::ior(V::high4(lb), V::template top_pair<-2>(h))};
        LORA_GEMV_UNROLL
        for (int k = 0; k < 4; ++k) {
          const auto dot = V::to_float(V::dot_bytes(codes[k], V::load_bytes(x + 32 * k)));
          acc[r] = V::fmadd(dot, V::lane_pair(factors, k), acc[r]);
        }
      }
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// Q2_K and Q3_K (layouts above q2_q3_k_rows_at): a 128-element half reads 32 code bytes four
// times, piece k (elements 32k .. 32k + 31) being bit pair 2k of each byte (and Q3_K's third bit,
// bit 4 * half + k of the matching byte of its 32). A piece is two sub-blocks of 16, so its dot's
// lanes 0-3 take the half's scale 2k and lanes 4-7 scale 2k + 1, as in Q6_K, and the offsets
// (-dmin * m, -4 * d * sc) meet x's sums per 16, eight a vector.
template <class V, int R, bool kThirdBit>
void q2_q3_k_int8_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a half-block's 8 scales are one vector");
  constexpr int64_t kBlockBytes = kThirdBit ? 110 : 84, kCodesAt = kThirdBit ? 32 : 16;
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, kBlockBytes * b, kBlockBytes);
    for (int half = 0; half < 2; ++half) {
      const int8_t* x = a.x_low + 256 * b + 128 * half;
      const auto dx = V::pairs_of_four(a.x_scales + 8 * b + 4 * half);
      const auto sums = V::load(a.sums + 16 * b + 8 * half);
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* block = rows[r] + kBlockBytes * b;
        const auto factors =
            V::mul(low_k_half_scales<V, kThirdBit>(a, block, half, sums, acc[r]), dx);
        const auto q = V::load_bytes(block + kCodesAt + 32 * half);
        LORA_GEMV_UNROLL
        for (int k = 0; k < 4; ++k) {
          const auto codes = low_k_piece_codes<V, kThirdBit>(q, block, half, k);
          const auto dot = V::to_float(V::dot_bytes(codes, V::load_bytes(x + 32 * k)));
          acc[r] = V::fmadd(dot, V::lane_pair(factors, k), acc[r]);
        }
      }
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// Q4_0 in octets (GgmlLayout::Q4_0Octets, gguf_quant.h): a vector of codes holds four bytes of
// each of the 8 rows, so against x's matching four bytes in every lane, lane r of the byte dots is
// row r's, and one accumulator carries the 8 rows to the end with no horizontal sums. A block
// takes four such vectors (per 8 rows: 4 loads and 7 operations each, then one widening, one
// conversion and two multiply-adds), where the row-by-row kernel spends about 6 operations per
// row and block.
template <class V>
void q4_0_octets_int8_rows(const RowsArgs& a, int64_t r0, int64_t r1) {
  static_assert(V::W == 8, "a lane per row of an octet");
  constexpr int64_t kPieceBytes = 288;  // 64 columns of 8 rows
  for (int64_t g = r0; g < r1; g += 8) {
    const uint8_t* group = a.data + g * a.row_bytes;
    auto acc = V::zero();
    for (int64_t p = 0; p < a.cols / 64; ++p) {
      const uint8_t* piece = group + kPieceBytes * p;
      prefetch_next_rows<8>(a, g, kPieceBytes / 8 * p, kPieceBytes / 8);
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t b = 2 * p + j;
        const int8_t* x = a.x_low + 32 * b;
        auto sums = V::izero();
        for (int c = 0; c < 4; ++c)
          sums =
              V::add_nibble_dots(sums, V::load_bytes(piece + 32 + 128 * j + 32 * c),
                                 V::broadcast_word(x + 4 * c), V::broadcast_word(x + 16 + 4 * c));
        const auto dot = V::to_float(V::widen_nibble_dots(sums));
        const auto scales = V::load_half(reinterpret_cast<const uint16_t*>(piece + 16 * j));
        acc = V::fmadd(scales, V::fmadd(V::set1(a.x_scales[b]), dot, V::set1(-8.0f * a.sums[b])),
                       acc);
      }
    }
    float rows[8];
    V::store(rows, acc);
    for (int r = 0; r < 8; ++r) store_row(a.y, g + r, rows[r], a.beta);
  }
}

// `k` with the 32-byte int8 kernels every copy shares: Q2_K, Q3_K and Q4_0 in octets.
template <class V>
constexpr lora::gemv::Kernels with_shared_int8_blocks(lora::gemv::Kernels k) {
  k.q4_0_octets_int8 = &q4_0_octets_int8_rows<V>;
  k.q2_k_int8 =
      &rows_in_fours<&q2_q3_k_int8_rows_at<V, 4, false>, &q2_q3_k_int8_rows_at<V, 1, false>>;
  k.q3_k_int8 =
      &rows_in_fours<&q2_q3_k_int8_rows_at<V, 4, true>, &q2_q3_k_int8_rows_at<V, 1, true>>;
  return k;
}

// `k` with the int8 block kernels of V added.
template <class V>
constexpr lora::gemv::Kernels with_int8_blocks(lora::gemv::Kernels k) {
  k.q4_0_int8 =
      &rows_in_fours<&q32_int8_rows_at<V, Q4_0Layout, 4>, &q32_int8_rows_at<V, Q4_0Layout, 1>>;
  k.q4_1_int8 =
      &rows_in_fours<&q32_int8_rows_at<V, Q4_1Layout, 4>, &q32_int8_rows_at<V, Q4_1Layout, 1>>;
  k.q5_0_int8 =
      &rows_in_fours<&q32_int8_rows_at<V, Q5_0Layout, 4>, &q32_int8_rows_at<V, Q5_0Layout, 1>>;
  k.q5_1_int8 =
      &rows_in_fours<&q32_int8_rows_at<V, Q5_1Layout, 4>, &q32_int8_rows_at<V, Q5_1Layout, 1>>;
  k.q8_0_int8 = &rows_in_fours<&q8_0_int8_rows_at<V, 4>, &q8_0_int8_rows_at<V, 1>>;
  k.q4_k_int8 = &rows_in_fours<&q4_k_int8_rows_at<V, 4>, &q4_k_int8_rows_at<V, 1>>;
  k.q5_k_int8 = &rows_in_fours<&q4_k_int8_rows_at<V, 4, true>, &q4_k_int8_rows_at<V, 1, true>>;
  k.q6_k_int8 = &rows_in_fours<&q6_k_int8_rows_at<V, 4>, &q6_k_int8_rows_at<V, 1>>;
  return with_shared_int8_blocks<V>(k);
}

}  // namespace
