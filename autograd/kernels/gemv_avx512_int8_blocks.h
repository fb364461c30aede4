// The int8 block kernels of kernels_gemv_int8_blocks.h that gain from 64-byte vectors, for
// gemv_avx512.cpp and gemv_avx512vnni.cpp alone (their flags: AVX-512 F/BW/VL/DQ, the second with
// VNNI for the byte dots of gemv_avx512_ops.h). Where the 32-byte kernels spend a
// vector operation per 8 products on the dot's widening, conversion, scale and multiply-add, these
// put two 32-element pieces in one vector, so each of those steps serves 16 lanes: Q4_K and Q5_K
// take four sub-blocks' codes in one 64-byte load, Q6_K a half-block's low bytes in one load
// against its high bits broadcast to both halves, Q8_0 two blocks a load, and the other 32-element
// blocks (Q4_0, Q4_1, Q5_0, Q5_1) one block of four rows in one vector, the rows' scales side by
// side. The x layout is kernels_gemv_int8_blocks.h's. Internal linkage.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "autograd/kernels/gemv_avx2_ops.h"
#include "autograd/kernels/gemv_avx512_ops.h"
#include "autograd/kernels/kernels_gemv.h"
#include "autograd/kernels/kernels_gemv_int8_blocks.h"

namespace {

// Lane l of the result: lane index[l] of v.
inline __m512 lanes_of(__m512 v, __m512i index) { return _mm512_permutexvar_ps(index, v); }

inline __m512i low4_512(__m512i v) { return _mm512_and_si512(v, _mm512_set1_epi8(15)); }
inline __m512i high4_512(__m512i v) { return low4_512(_mm512_srli_epi16(v, 4)); }

// Bytes at p and p + 32, as one vector's lower and upper halves.
inline __m512i two_32_bytes(const void* p, const void* q) {
  const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo),
                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)), 1);
}

// 32 bytes at p in both halves of a vector.
inline __m512i broadcast_32_bytes(const uint8_t* p) {
  return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// The lane pattern (a, a, a, a, b, b, b, b, c, ..., d): four lanes each of the four values.
inline __m512i fours(int a, int b, int c, int d) {
  return _mm512_setr_epi32(a, a, a, a, b, b, b, b, c, c, c, c, d, d, d, d);
}

// Four rows' f16 values at block + r * stride (r = 0..3), row r's in lanes 4r..4r+3: broadcasts
// from the table into masked lanes, loads rather than shuffles.
[[gnu::always_inline]] inline __m512 four_rows_halves(const RowsArgs& a, const uint8_t* block) {
  const int64_t stride = a.row_bytes;
  __m512 v = _mm512_set1_ps(half_at(a, block));
  v = _mm512_mask_broadcastss_ps(v, 0x00F0, _mm_set_ss(half_at(a, block + stride)));
  v = _mm512_mask_broadcastss_ps(v, 0x0F00, _mm_set_ss(half_at(a, block + 2 * stride)));
  return _mm512_mask_broadcastss_ps(v, 0xF000, _mm_set_ss(half_at(a, block + 3 * stride)));
}

// The fifth bits of four Q5_0 or Q5_1 rows' blocks as masks over a vector of their codes (row r's
// 16 bytes in bits 16r..16r+15): element j's bit for the low nibbles, element 16 + j's for the
// high.
template <class L>
[[gnu::always_inline]] inline void fifth_bit_masks(const uint8_t* block, int64_t stride,
                                                   __mmask64* low, __mmask64* high) {
  const auto qh_of = [&](int r) {
    int32_t qh;
    std::memcpy(&qh, block + r * stride + L::kCodes - 4, 4);
    return qh;
  };
  __m128i words = _mm_cvtsi32_si128(qh_of(0));
  words = _mm_insert_epi32(words, qh_of(1), 1);
  words = _mm_insert_epi32(words, qh_of(2), 2);
  words = _mm_insert_epi32(words, qh_of(3), 3);
  // The four rows' low 16-bit halves, then their high ones.
  const __m128i split =
      _mm_shuffle_epi8(words, _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15));
  *low = static_cast<__mmask64>(_mm_cvtsi128_si64(split));
  *high = static_cast<__mmask64>(_mm_extract_epi64(split, 1));
}

// The 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1), four rows at once: block b of the four rows
// fills one vector (row r in lanes 4r..4r+3), the low nibbles (with their fifth bits) against the
// block's first 16 elements of x in every 128-bit part, the high ones against its last 16. The
// offsets ride along in the same lanes: Q4_0's lane becomes d * (dx * dot - 2 * sum(x)) (four
// lanes a row: -8 d sum(x)), Q5_0's -4 * sum(x), and Q4_1's and Q5_1's add m * sum(x) / 4.
template <class L>
[[gnu::always_inline]] inline void q32_four_rows_block(const RowsArgs& a, const uint8_t* row,
                                                       int64_t b, __m512& acc) {
  const int8_t* xb = a.x_low + 32 * b;
  const __m512i xl = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb)));
  const __m512i xh =
      _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(xb + 16)));
  const uint8_t* block = row + L::kBytes * b;
  const auto codes_of = [&](int r) {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + r * a.row_bytes + L::kCodes));
  };
  __m512i codes = _mm512_castsi128_si512(codes_of(0));
  codes = _mm512_inserti32x4(codes, codes_of(1), 1);
  codes = _mm512_inserti32x4(codes, codes_of(2), 2);
  codes = _mm512_inserti32x4(codes, codes_of(3), 3);
  __m512i low = low4_512(codes), high = high4_512(codes);
  if constexpr (L::kHighBits) {
    __mmask64 low_bits, high_bits;
    fifth_bit_masks<L>(block, a.row_bytes, &low_bits, &high_bits);
    const __m512i sixteen = _mm512_set1_epi8(16);
    low = _mm512_mask_add_epi8(low, low_bits, low, sixteen);
    high = _mm512_mask_add_epi8(high, high_bits, high, sixteen);
  }
  // A lane's eight products: at most 8 * 31 * 127, within 16 bits.
  const __m512 dot = _mm512_cvtepi32_ps(dot_two_bytes512(low, xl, high, xh));
  const __m512 dx = _mm512_set1_ps(a.x_scales[b]), d = four_rows_halves(a, block);
  if constexpr (L::kMin) {
    acc = _mm512_fmadd_ps(_mm512_mul_ps(dot, dx), d, acc);
    acc = _mm512_fmadd_ps(four_rows_halves(a, block + 2), _mm512_set1_ps(0.25f * a.sums[b]), acc);
  } else {
    constexpr float kOffsetPerLane = L::kHighBits ? -4.0f : -2.0f;
    acc = _mm512_fmadd_ps(_mm512_fmadd_ps(dot, dx, _mm512_set1_ps(kOffsetPerLane * a.sums[b])), d,
                          acc);
  }
}

template <class L>
void q32_int8_four_rows_at(const RowsArgs& a, int64_t r0) {
  const int64_t blocks = a.cols / 32;
  const uint8_t* row = a.data + r0 * a.row_bytes;
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<4>(a, r0, L::kBytes * b, L::kBytes);
    q32_four_rows_block<L>(a, row, b, acc);
  }
  // Each 128-bit part's four lanes summed: row r's dot in every lane of part r.
  const __m512 pair_sums = _mm512_add_ps(acc, _mm512_permute_ps(acc, 0xB1));
  const __m512 sums = _mm512_add_ps(pair_sums, _mm512_permute_ps(pair_sums, 0x4E));
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sums);
  for (int r = 0; r < 4; ++r) store_row(a.y, r0 + r, lanes[4 * r], a.beta);
}

// Q8_0, two blocks a step: each row's two blocks' codes in one vector against 64 bytes of x, the
// lanes of each block scaled by its d * dx (an odd last block: the upper half zero).
template <int R, bool kPair>
[[gnu::always_inline]] inline void q8_0_two_blocks(const RowsArgs& a, const uint8_t* const* rows,
                                                   int64_t b, __m512 (&acc)[R]) {
  const int8_t* x = a.x_low + 32 * b;
  const __m512i xq = kPair ? _mm512_loadu_si512(x) : _mm512_maskz_loadu_epi8(0xFFFFFFFF, x);
  const float dx0 = a.x_scales[b], dx1 = kPair ? a.x_scales[b + 1] : 0.0f;
  const SignedByteDots dots(xq);
  LORA_GEMV_UNROLL
  for (int r = 0; r < R; ++r) {
    const uint8_t* block = rows[r] + 34 * b;
    const __m512i codes = kPair ? two_32_bytes(block + 2, block + 36)
                                : _mm512_zextsi256_si512(_mm256_loadu_si256(
                                      reinterpret_cast<const __m256i*>(block + 2)));
    __m512 scale = _mm512_set1_ps(half_at(a, block) * dx0);
    if constexpr (kPair)
      scale = _mm512_mask_broadcastss_ps(scale, 0xFF00, _mm_set_ss(half_at(a, block + 34) * dx1));
    acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots(codes)), scale, acc[r]);
  }
}

template <class V, int R>
void q8_0_int8_wide_rows_at(const RowsArgs& a, int64_t r0) {
  const int64_t blocks = a.cols / 32;
  __m512 acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  int64_t b = 0;
  for (; b + 2 <= blocks; b += 2) {
    prefetch_next_rows<R>(a, r0, 34 * b, 68);
    q8_0_two_blocks<R, true>(a, rows, b, acc);
  }
  if (b < blocks) q8_0_two_blocks<R, false>(a, rows, b, acc);
  store_rows<V, R>(a, r0, acc);
}

// Q4_K and Q5_K (layouts above q4_k_rows_at): a 64-byte load of codes holds sub-blocks 4q and
// 4q + 2 in its halves' low nibbles and 4q + 1, 4q + 3 in their high ones (q = 0, 1), against x
// gathered the same way once per block for all rows. A row's 8 sub-block factors d * sc_j * dx_j
// are spread to the lanes by one permutation per vector of codes.
template <class V, int R, bool kFifthBit = false>
void q4_k_int8_wide_rows_at(const RowsArgs& a, int64_t r0) {
  constexpr int64_t kBlockBytes = kFifthBit ? 176 : 144, kCodesAt = kFifthBit ? 48 : 16;
  const int64_t blocks = a.cols / 256;
  __m512 acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  // Sub-block of each lane, for the low and high nibbles of load q.
  const __m512i sub_low[2] = {fours(0, 0, 2, 2), fours(4, 4, 6, 6)};
  const __m512i sub_high[2] = {fours(1, 1, 3, 3), fours(5, 5, 7, 7)};
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, kBlockBytes * b, kBlockBytes);
    const int8_t* x = a.x_low + 256 * b;
    const __m512i xl[2] = {two_32_bytes(x, x + 64), two_32_bytes(x + 128, x + 192)};
    const __m512i xh[2] = {two_32_bytes(x + 32, x + 96), two_32_bytes(x + 160, x + 224)};
    const __m512 dx = _mm512_zextps256_ps512(_mm256_loadu_ps(a.x_scales + 8 * b));
    const __m512 sums = _mm512_zextps256_ps512(_mm256_loadu_ps(a.sums + 8 * b));
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + kBlockBytes * b;
      __m256i sc, mn;
      Avx2::k_scale_min_lanes(block + 4, &sc, &mn);
      const __m256 mins =
          _mm256_mul_ps(_mm256_cvtepi32_ps(mn), _mm256_set1_ps(-half_at(a, block + 2)));
      acc[r] = _mm512_fmadd_ps(_mm512_zextps256_ps512(mins), sums, acc[r]);
      const __m512 factors =
          _mm512_mul_ps(_mm512_zextps256_ps512(_mm256_mul_ps(_mm256_cvtepi32_ps(sc),
                                                             _mm256_set1_ps(half_at(a, block)))),
                        dx);
      LORA_GEMV_UNROLL
      for (int q = 0; q < 2; ++q) {
        const __m512i codes = _mm512_loadu_si512(block + kCodesAt + 64 * q);
        __m512i low = low4_512(codes), high = high4_512(codes);
        if constexpr (kFifthBit) {
          // Byte l's bits 4q, 4q + 2 (lower half; upper half) go to bit 4 of the low codes, bits
          // 4q + 1, 4q + 3 to the high codes'.
          const __m512i h = broadcast_32_bytes(block + 16);
          const __m512i lo_shift = _mm512_setr_epi64(4 * q, 4 * q, 4 * q, 4 * q, 4 * q + 2,
                                                     4 * q + 2, 4 * q + 2, 4 * q + 2);
          const __m512i sixteen = _mm512_set1_epi8(16);
          low = _mm512_or_si512(
              low, _mm512_and_si512(_mm512_slli_epi16(_mm512_srlv_epi64(h, lo_shift), 4), sixteen));
          high = _mm512_or_si512(
              high,
              _mm512_and_si512(
                  _mm512_slli_epi16(
                      _mm512_srlv_epi64(h, _mm512_add_epi64(lo_shift, _mm512_set1_epi64(1))), 4),
                  sixteen));
        }
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_bytes512(low, xl[q])),
                                 lanes_of(factors, sub_low[q]), acc[r]);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_bytes512(high, xh[q])),
                                 lanes_of(factors, sub_high[q]), acc[r]);
      }
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// Q6_K (layout above q6_k_rows_at): a half-block's 64 low bytes in one load hold codes k = 0, 1
// (low nibbles, with the high bits' pairs at shifts 4 and 2) and k = 2, 3 (high nibbles, shifts
// 0 and -2), each against 64 contiguous elements of x; the 16 scales times d make one vector
// per block, which also carries -32 * d * sc * sum(x) and is spread to the lanes by permutation.
template <class V, int R>
void q6_k_int8_wide_rows_at(const RowsArgs& a, int64_t r0) {
  const int64_t blocks = a.cols / 256;
  __m512 acc[R];
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  const __m512i up_low = _mm512_setr_epi64(4, 4, 4, 4, 2, 2, 2, 2);
  const __m512i down_high = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2);
  const __m512i top_pair = _mm512_set1_epi8(48);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, 210 * b, 210);
    const __m512 offsets = _mm512_mul_ps(_mm512_loadu_ps(a.sums + 16 * b), _mm512_set1_ps(-32.0f));
    // Per half and code pair: lanes 0-7 take dx of its first 32 elements, 8-15 of its second.
    __m512 dx[2][2];
    for (int half = 0; half < 2; ++half)
      for (int q = 0; q < 2; ++q) {
        const float* s = a.x_scales + 8 * b + 4 * half + 2 * q;
        dx[half][q] = _mm512_insertf32x8(_mm512_set1_ps(s[0]), _mm256_set1_ps(s[1]), 1);
      }
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) {
      const uint8_t* block = rows[r] + 210 * b;
      const __m512 scales = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                                              reinterpret_cast<const __m128i*>(block + 192)))),
                                          _mm512_set1_ps(half_at(a, block + 208)));
      acc[r] = _mm512_fmadd_ps(scales, offsets, acc[r]);
      LORA_GEMV_UNROLL
      for (int half = 0; half < 2; ++half) {
        const __m512i low = _mm512_loadu_si512(block + 64 * half);
        const __m512i h = broadcast_32_bytes(block + 128 + 32 * half);
        const __m512i codes[2] = {
            _mm512_or_si512(low4_512(low),
                            _mm512_and_si512(_mm512_sllv_epi64(h, up_low), top_pair)),
            _mm512_or_si512(high4_512(low),
                            _mm512_and_si512(_mm512_srlv_epi64(h, down_high), top_pair))};
        const int8_t* x = a.x_low + 256 * b + 128 * half;
        LORA_GEMV_UNROLL
        for (int q = 0; q < 2; ++q) {
          const int s = 8 * half + 4 * q;
          const __m512 factors =
              _mm512_mul_ps(lanes_of(scales, fours(s, s + 1, s + 2, s + 3)), dx[half][q]);
          const __m512i xq = _mm512_loadu_si512(x + 64 * q);
          acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot_bytes512(codes[q], xq)), factors, acc[r]);
        }
      }
    }
  }
  store_rows<V, R>(a, r0, acc);
}

// `k` with V's int8 block kernels.
template <class V>
constexpr lora::gemv::Kernels with_wide_int8_blocks(lora::gemv::Kernels k) {
  // Rows past a multiple of four: the 32-byte kernel, one row at a time.
  k.q4_0_int8 =
      &rows_in_fours<&q32_int8_four_rows_at<Q4_0Layout>, &q32_int8_rows_at<Avx2, Q4_0Layout, 1>>;
  k.q4_1_int8 =
      &rows_in_fours<&q32_int8_four_rows_at<Q4_1Layout>, &q32_int8_rows_at<Avx2, Q4_1Layout, 1>>;
  k.q5_0_int8 =
      &rows_in_fours<&q32_int8_four_rows_at<Q5_0Layout>, &q32_int8_rows_at<Avx2, Q5_0Layout, 1>>;
  k.q5_1_int8 =
      &rows_in_fours<&q32_int8_four_rows_at<Q5_1Layout>, &q32_int8_rows_at<Avx2, Q5_1Layout, 1>>;
  k.q8_0_int8 = &rows_in_fours<&q8_0_int8_wide_rows_at<V, 4>, &q8_0_int8_wide_rows_at<V, 1>>;
  k.q4_k_int8 = &rows_in_fours<&q4_k_int8_wide_rows_at<V, 4>, &q4_k_int8_wide_rows_at<V, 1>>;
  k.q5_k_int8 =
      &rows_in_fours<&q4_k_int8_wide_rows_at<V, 4, true>, &q4_k_int8_wide_rows_at<V, 1, true>>;
  k.q6_k_int8 = &rows_in_fours<&q6_k_int8_wide_rows_at<V, 4>, &q6_k_int8_wide_rows_at<V, 1>>;
  return with_shared_int8_blocks<Avx2>(k);
}

}  // namespace
