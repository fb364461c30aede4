// The 16-lane vector type of the matrix-vector kernels (V in kernels_gemv.h) on AVX-512 F/BW/VL/DQ
// intrinsics, and the int8 byte dots every AVX-512 kernel shares. Two files build on it
// (autograd/CMakeLists.txt): gemv_avx512.cpp, and gemv_avx512vnni.cpp, whose flags add
// AVX512-VNNI and which defines LORA_GEMV_VNNI, so that each byte dot is one vpdpbusd instead of
// vpmaddubsw and vpmaddwd. Both
// give the same integers, and so the same floats: no 16-bit sum of the plain form saturates on
// the codes and x the kernels pass. Internal linkage.
#pragma once
#include <immintrin.h>

#include <bit>
#include <cstdint>

namespace {

// Lane l: the sum of the four products of bytes 4l..4l+3 of u (unsigned) and s (signed), for
// bytes whose pairs of products sum within 16 bits (codes up to 128 against x in [-127, 127]).
inline __m512i dot_bytes512(__m512i u, __m512i s) {
#ifdef LORA_GEMV_VNNI
  return _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, s);
#else
  return _mm512_madd_epi16(_mm512_maddubs_epi16(u, s), _mm512_set1_epi16(1));
#endif
}

// dot_bytes512(u1, s1) + dot_bytes512(u2, s2), where each lane's eight products also sum within
// 16 bits: the plain form adds the two halves' pairs before widening them once.
inline __m512i dot_two_bytes512(__m512i u1, __m512i s1, __m512i u2, __m512i s2) {
#ifdef LORA_GEMV_VNNI
  return _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), u1, s1), u2, s2);
#else
  const __m512i pairs =
      _mm512_add_epi16(_mm512_maddubs_epi16(u1, s1), _mm512_maddubs_epi16(u2, s2));
  return _mm512_madd_epi16(pairs, _mm512_set1_epi16(1));
#endif
}

// As dot_bytes512 for signed codes (Q8_0), against one x for many rows' codes. Plain: |codes|
// against x negated where a code is negative. VNNI: the codes made unsigned (c + 128) against x,
// each lane starting from -128 times the sum of its x bytes, found once per x. Both are exact.
class SignedByteDots {
 public:
  explicit SignedByteDots(__m512i x) : x_(x) {
#ifdef LORA_GEMV_VNNI
    const __m512i x_sums_128 =
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(char(0x80)), x);
    start_ = _mm512_sub_epi32(_mm512_setzero_si512(), x_sums_128);
#endif
  }
  __m512i operator()(__m512i codes) const {
#ifdef LORA_GEMV_VNNI
    return _mm512_dpbusd_epi32(start_, _mm512_xor_si512(codes, _mm512_set1_epi8(char(0x80))), x_);
#else
    const __m512i signed_x =
        _mm512_mask_sub_epi8(x_, _mm512_movepi8_mask(codes), _mm512_setzero_si512(), x_);
    return dot_bytes512(_mm512_abs_epi8(codes), signed_x);
#endif
  }

 private:
  __m512i x_, start_ = _mm512_setzero_si512();
};

struct Avx512 {
  static constexpr int W = 16;
  using reg = __m512;
  using ireg = __m512i;
  static reg zero() { return _mm512_setzero_ps(); }
  static reg load(const float* p) { return _mm512_loadu_ps(p); }
  static reg load_half(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(float* p, reg v) { _mm512_storeu_ps(p, v); }
  static reg set1(float v) { return _mm512_set1_ps(v); }
  static reg add(reg a, reg b) { return _mm512_add_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm512_mul_ps(a, b); }
  static reg fmadd(reg a, reg b, reg c) { return _mm512_fmadd_ps(a, b, c); }
  static float hsum(reg a) { return _mm512_reduce_add_ps(a); }
  // Each 128-bit part ends with the four registers' sums over its lanes, then the parts add up.
  static void hsum4(const reg (&v)[4], float* out) {
    const reg p0 = _mm512_add_ps(_mm512_unpacklo_ps(v[0], v[1]), _mm512_unpackhi_ps(v[0], v[1]));
    const reg p1 = _mm512_add_ps(_mm512_unpacklo_ps(v[2], v[3]), _mm512_unpackhi_ps(v[2], v[3]));
    const reg q = _mm512_add_ps(_mm512_shuffle_ps(p0, p1, 0x44), _mm512_shuffle_ps(p0, p1, 0xEE));
    const __m256 h =
        _mm256_add_ps(_mm512_castps512_ps256(q),
                      _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(q), 1)));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)));
  }
  static reg load_partial(const float* p, int64_t n) {
    return _mm512_maskz_loadu_ps(n >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << n) - 1), p);
  }
  // Four levels, each adding two halves of every pair of vectors so that a vector holds half as
  // many partial sums for twice as many inputs: 45 operations for 16 sums.
  static reg sum_each(const reg (&v)[16]) {
    reg quads[4];
    for (int g = 0; g < 4; ++g) {
      reg pairs[2];
      for (int p = 0; p < 2; ++p) {
        const reg a = v[4 * g + 2 * p], b = v[4 * g + 2 * p + 1];
        pairs[p] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
      }
      quads[g] = _mm512_add_ps(_mm512_shuffle_ps(pairs[0], pairs[1], 0x44),
                               _mm512_shuffle_ps(pairs[0], pairs[1], 0xEE));
    }
    // quads[g]'s 128-bit part k: the sums of v[4g .. 4g+3] over their own part k.
    const reg lo = _mm512_add_ps(_mm512_shuffle_f32x4(quads[0], quads[1], 0x44),
                                 _mm512_shuffle_f32x4(quads[0], quads[1], 0xEE));
    const reg hi = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2], quads[3], 0x44),
                                 _mm512_shuffle_f32x4(quads[2], quads[3], 0xEE));
    return _mm512_add_ps(_mm512_shuffle_f32x4(lo, hi, 0x88), _mm512_shuffle_f32x4(lo, hi, 0xDD));
  }
  static ireg load_u8(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static ireg load_s8(const uint8_t* p) {
    return _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static reg to_float(ireg v) { return _mm512_cvtepi32_ps(v); }
  static ireg and15(ireg v) { return _mm512_and_si512(v, _mm512_set1_epi32(15)); }
  static ireg shr4(ireg v) { return _mm512_srli_epi32(v, 4); }
  static ireg ior(ireg a, ireg b) { return _mm512_or_si512(a, b); }
  static ireg bit_lanes16(uint32_t bits) {
    return _mm512_maskz_mov_epi32(static_cast<__mmask16>(bits), _mm512_set1_epi32(16));
  }
  template <int To>
  static ireg lane_bit_to(ireg h, int s) {
    const ireg moved = _mm512_srlv_epi32(_mm512_slli_epi32(h, To), _mm512_set1_epi32(s));
    return _mm512_and_si512(moved, _mm512_set1_epi32(1 << To));
  }
  template <int S>
  static ireg high_pair(ireg h) {
    ireg s;
    if constexpr (S >= 0)
      s = _mm512_slli_epi32(h, S);
    else
      s = _mm512_srli_epi32(h, -S);
    return _mm512_and_si512(s, _mm512_set1_epi32(48));
  }
  // A code is its own index into a register of 16 floats (vpermps reads the low 4 bits of each
  // lane): one shuffle instead of a mask and a conversion.
  static constexpr bool kCodeTable = true;
  static reg codes() {
    return _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  }
  static reg lookup_low(ireg v, reg table) { return _mm512_permutexvar_ps(v, table); }
  static reg lookup_high(ireg v, reg table) {
    return _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), table);
  }
  static ireg load_bytes(const void* p) { return _mm512_loadu_si512(p); }
  static ireg load_bytes_partial(const void* p, int64_t n) {
    return _mm512_maskz_loadu_epi8(n >= 64 ? ~__mmask64(0) : (__mmask64(1) << n) - 1, p);
  }
  // Codes are unsigned and at most 15, x signed: a lane's eight products sum to at most
  // 8 * 15 * 128, within dot_two_bytes512's 16 bits.
  static ireg dot_nibbles(ireg codes, ireg x_low, ireg x_high) {
    const ireg mask = _mm512_set1_epi8(15);
    const ireg low = _mm512_and_si512(codes, mask);
    const ireg high = _mm512_and_si512(_mm512_srli_epi16(codes, 4), mask);
    return dot_two_bytes512(low, x_low, high, x_high);
  }
  static ireg group_index(int64_t lanes_per_group) {
    const ireg lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    return _mm512_srli_epi32(lane, std::countr_zero(uint64_t(lanes_per_group)));
  }
  // count is 1, 2 or 4 (groups of 128, 64 or 32), each read with a load of its own size.
  static reg spread_groups(const float* scales, int64_t count, ireg index) {
    if (count == 1) return _mm512_set1_ps(*scales);
    const __m128 few =
        count == 2 ? _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales)))
                   : _mm_loadu_ps(scales);
    return _mm512_permutexvar_ps(index, _mm512_castps128_ps512(few));
  }
  static reg low_nibble(ireg v) { return lookup_low(v, codes()); }
  static reg high_nibble(ireg v) { return lookup_high(v, codes()); }
};

}  // namespace
