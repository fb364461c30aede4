// The 8-lane vector type of the matrix-vector kernels (V in kernels_gemv.h) on AVX2, FMA and F16C
// intrinsics: gemv_avx2.cpp builds every kernel on it, and gemv_avx512.cpp its int8 block
// kernels (kernels_gemv_int8_blocks.h), which work on 32-byte vectors. Each including file is
// compiled with flags that cover these instructions (autograd/CMakeLists.txt).
#pragma once
#include <immintrin.h>

#include <bit>
#include <cstdint>
#include <cstring>

// With LORA_GEMV_VNNI (defined by gemv_avx512vnni.cpp, whose flags add AVX512-VNNI and VL) a byte
// dot is one vpdpbusd on 32-byte vectors too; the integers are the same, as no 16-bit sum of the
// plain form saturates.

namespace {

struct Avx2 {
  static constexpr int W = 8;
  using reg = __m256;
  using ireg = __m256i;
  static reg zero() { return _mm256_setzero_ps(); }
  static reg load(const float* p) { return _mm256_loadu_ps(p); }
  static reg load_half(const uint16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(float* p, reg v) { _mm256_storeu_ps(p, v); }
  static reg set1(float v) { return _mm256_set1_ps(v); }
  static reg add(reg a, reg b) { return _mm256_add_ps(a, b); }
  static reg mul(reg a, reg b) { return _mm256_mul_ps(a, b); }
  static constexpr bool kCodeTable = false;
  static reg fmadd(reg a, reg b, reg c) { return _mm256_fmadd_ps(a, b, c); }
  static float hsum(reg a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  // Each 128-bit half ends with the four registers' sums over its lanes, then the halves add up.
  static void hsum4(const reg (&v)[4], float* out) {
    const reg p0 = _mm256_add_ps(_mm256_unpacklo_ps(v[0], v[1]), _mm256_unpackhi_ps(v[0], v[1]));
    const reg p1 = _mm256_add_ps(_mm256_unpacklo_ps(v[2], v[3]), _mm256_unpackhi_ps(v[2], v[3]));
    const reg q = _mm256_add_ps(_mm256_shuffle_ps(p0, p1, 0x44), _mm256_shuffle_ps(p0, p1, 0xEE));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps(q, 1)));
  }
  static reg load_partial(const float* p, int64_t n) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const int count = n >= 8 ? 8 : static_cast<int>(n);
    return _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(count), lanes));
  }
  // Three levels, each adding two halves of every pair of vectors: 21 operations for 8 sums.
  static reg sum_each(const reg (&v)[8]) {
    reg quads[2];
    for (int g = 0; g < 2; ++g) {
      reg pairs[2];
      for (int p = 0; p < 2; ++p) {
        const reg a = v[4 * g + 2 * p], b = v[4 * g + 2 * p + 1];
        pairs[p] = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
      }
      quads[g] = _mm256_add_ps(_mm256_shuffle_ps(pairs[0], pairs[1], 0x44),
                               _mm256_shuffle_ps(pairs[0], pairs[1], 0xEE));
    }
    return _mm256_add_ps(_mm256_permute2f128_ps(quads[0], quads[1], 0x20),
                         _mm256_permute2f128_ps(quads[0], quads[1], 0x31));
  }
  static __m128i eight_bytes(const uint8_t* p) {
    int64_t v;
    std::memcpy(&v, p, 8);
    return _mm_cvtsi64_si128(v);
  }
  static ireg load_u8(const uint8_t* p) { return _mm256_cvtepu8_epi32(eight_bytes(p)); }
  static ireg load_s8(const uint8_t* p) { return _mm256_cvtepi8_epi32(eight_bytes(p)); }
  static reg to_float(ireg v) { return _mm256_cvtepi32_ps(v); }
  static ireg and15(ireg v) { return _mm256_and_si256(v, _mm256_set1_epi32(15)); }
  static ireg shr4(ireg v) { return _mm256_srli_epi32(v, 4); }
  static ireg ior(ireg a, ireg b) { return _mm256_or_si256(a, b); }
  // Lane l keeps bit l + 4 of bits << 4 (only the low 8 bits of `bits` matter here).
  static ireg bit_lanes16(uint32_t bits) {
    const ireg shifted = _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>((bits & 255u) << 4)),
                                           _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return _mm256_and_si256(shifted, _mm256_set1_epi32(16));
  }
  template <int To>
  static ireg lane_bit_to(ireg h, int s) {
    const ireg moved = _mm256_srlv_epi32(_mm256_slli_epi32(h, To), _mm256_set1_epi32(s));
    return _mm256_and_si256(moved, _mm256_set1_epi32(1 << To));
  }
  template <int S>
  static ireg high_pair(ireg h) {
    ireg s;
    if constexpr (S >= 0)
      s = _mm256_slli_epi32(h, S);
    else
      s = _mm256_srli_epi32(h, -S);
    return _mm256_and_si256(s, _mm256_set1_epi32(48));
  }
  static ireg load_bytes(const void* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }
  // The 16 bytes at p, then the 16 at q, as a blend of two loads (where an insert would take
  // one of the two shuffle pipes of Zen 3, which the block kernels load most); reads the 32 bytes
  // from p and the 16 before q too.
  static ireg two_pieces(const void* p, const void* q) {
    return _mm256_blend_epi32(load_bytes(p), load_bytes(static_cast<const char*>(q) - 16), 0xF0);
  }
  // *p in the first four lanes, *q in the last four: halves() below for values already in
  // registers, this for values in memory, where two broadcast loads and a blend spare the insert.
  static reg two_broadcasts(const float* p, const float* q) {
    return _mm256_blend_ps(_mm256_broadcast_ss(p), _mm256_broadcast_ss(q), 0xF0);
  }
  static ireg lanes_below(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  // n is a multiple of 4 (MLX rows are whole 32-bit words).
  static ireg load_bytes_partial(const void* p, int64_t n) {
    return _mm256_maskload_epi32(static_cast<const int*>(p), lanes_below(n / 4));
  }
  // Codes are unsigned and at most 15, x signed: a pair's products sum to at most 2 * 15 * 128,
  // so the low and high pairs add in 16 bits before widening.
  static ireg dot_nibbles(ireg codes, ireg x_low, ireg x_high) {
    const ireg mask = _mm256_set1_epi8(15);
    const ireg low = _mm256_and_si256(codes, mask);
    const ireg high = _mm256_and_si256(_mm256_srli_epi16(codes, 4), mask);
#ifdef LORA_GEMV_VNNI
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), low, x_low), high,
                               x_high);
#else
    const ireg pairs =
        _mm256_add_epi16(_mm256_maddubs_epi16(low, x_low), _mm256_maddubs_epi16(high, x_high));
    return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1));
#endif
  }
  // The four bytes at p in every lane: x's bytes against eight rows' codes side by side.
  static ireg broadcast_word(const void* p) {
    int32_t w;
    std::memcpy(&w, p, 4);
    return _mm256_set1_epi32(w);
  }
  static ireg izero() { return _mm256_setzero_si256(); }
  // sums plus codes' low nibbles times x_low and high nibbles times x_high, per 4 bytes. Plain,
  // in 16-bit pair sums that widen_nibble_dots turns into lanes: at most 2 * 2 * 15 * 127 a call,
  // so four calls fit; with VNNI in 32-bit lanes already.
  static ireg add_nibble_dots(ireg sums, ireg codes, ireg x_low, ireg x_high) {
    const ireg mask = _mm256_set1_epi8(15);
    const ireg low = _mm256_and_si256(codes, mask);
    const ireg high = _mm256_and_si256(_mm256_srli_epi16(codes, 4), mask);
#ifdef LORA_GEMV_VNNI
    return _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(sums, low, x_low), high, x_high);
#else
    return _mm256_add_epi16(sums, _mm256_add_epi16(_mm256_maddubs_epi16(low, x_low),
                                                   _mm256_maddubs_epi16(high, x_high)));
#endif
  }
  static ireg widen_nibble_dots(ireg sums) {
#ifdef LORA_GEMV_VNNI
    return sums;
#else
    return _mm256_madd_epi16(sums, _mm256_set1_epi16(1));
#endif
  }
  static ireg group_index(int64_t lanes_per_group) {
    const ireg lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_srlv_epi32(lane, _mm256_set1_epi32(std::countr_zero(uint64_t(lanes_per_group))));
  }
  // count is 1 or 2 (groups of 64 or more, or 32).
  static reg spread_groups(const float* scales, int64_t count, ireg index) {
    if (count == 1) return _mm256_broadcast_ss(scales);
    const __m128 two = _mm_castsi128_ps(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales)));
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(two), index);
  }
  static reg low_nibble(ireg v) { return to_float(_mm256_and_si256(v, _mm256_set1_epi32(15))); }
  static reg high_nibble(ireg v) { return to_float(_mm256_srli_epi32(v, 4)); }
  // Bytes: their low and high nibbles; a Q4_0 block's 16 code bytes as its 32 codes in element
  // order (the low nibbles are elements 0-15, the high ones 16-31).
  static ireg low4(ireg v) { return _mm256_and_si256(v, _mm256_set1_epi8(15)); }
  static ireg high4(ireg v) { return low4(_mm256_srli_epi16(v, 4)); }
  static ireg nibbles16(const uint8_t* p) {
    const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return low4(_mm256_set_m128i(_mm_srli_epi16(c, 4), c));
  }
  // Each byte's two bits that shifting it left by S (right by -S) puts at bits 4-5, as 0..48:
  // Q6_K's high bits. Bits a 16-bit shift carries in from the neighbouring byte are masked off.
  template <int S>
  static ireg top_pair(ireg h) {
    ireg s;
    if constexpr (S > 0)
      s = _mm256_slli_epi16(h, S);
    else if constexpr (S < 0)
      s = _mm256_srli_epi16(h, -S);
    else
      s = h;
    return _mm256_and_si256(s, _mm256_set1_epi8(48));
  }
  // Lane l: codes (unsigned, at most 63) times x (signed, never -128) over bytes 4l..4l+3; a
  // byte pair's sum, at most 2 * 63 * 127, fits the 16 bits maddubs adds it in.
  static ireg dot_bytes(ireg codes, ireg x) {
#ifdef LORA_GEMV_VNNI
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, x);
#else
    return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, x), _mm256_set1_epi16(1));
#endif
  }
  // dot_bytes(codes_a, x_a) and dot_bytes(codes_b, x_b) folded into one vector: lanes 0-3 sum
  // the first's halves, lanes 4-7 the second's, so one conversion and one multiply-add with
  // lane_pair's factors take two sub-blocks. Plain, the 16-bit pair sums of both halves add
  // before widening: at most 4 * 31 * 128, for codes below 32.
  static ireg dot_bytes_halves(ireg codes_a, ireg x_a, ireg codes_b, ireg x_b) {
#ifdef LORA_GEMV_VNNI
    const ireg a = _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes_a, x_a);
    const ireg b = _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes_b, x_b);
    return _mm256_add_epi32(_mm256_permute2x128_si256(a, b, 0x20),
                            _mm256_permute2x128_si256(a, b, 0x31));
#else
    const ireg a = _mm256_maddubs_epi16(codes_a, x_a), b = _mm256_maddubs_epi16(codes_b, x_b);
    const ireg sums = _mm256_add_epi16(_mm256_permute2x128_si256(a, b, 0x20),
                                       _mm256_permute2x128_si256(a, b, 0x31));
    return _mm256_madd_epi16(sums, _mm256_set1_epi16(1));
#endif
  }
  // Byte j: 16 where bit j of bits is set, else 0 (the fifth bits of a Q5_0 or Q5_1 block).
  static ireg bit_bytes16(uint32_t bits) {
    // Byte j first holds byte j / 8 of bits, then keeps bit j % 8 of it.
    const ireg spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)),
                            _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                             2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const ireg bit = _mm256_set1_epi64x(0x8040201008040201);
    return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit),
                            _mm256_set1_epi8(16));
  }
  // Byte j: bit s (below 8) of byte j of h moved to bit To, as 0 or 2^To (Q5_K's fifth bits at
  // bit 4, Q3_K's third bits at bit 2).
  // One 16-bit shift either way: bit s of each byte lands on bit To of the same byte.
  template <int To>
  static ireg byte_bit_to(ireg h, int s) {
    const ireg moved = s >= To ? _mm256_srl_epi16(h, _mm_cvtsi32_si128(s - To))
                               : _mm256_sll_epi16(h, _mm_cvtsi32_si128(To - s));
    return _mm256_and_si256(moved, _mm256_set1_epi8(static_cast<char>(1 << To)));
  }
  // Byte j: bits s and s + 1 of byte j of v, as 0..3 (Q2_K's and Q3_K's low code bits).
  static ireg byte_bit_pair(ireg v, int s) {
    return _mm256_and_si256(_mm256_srl_epi16(v, _mm_cvtsi32_si128(s)), _mm256_set1_epi8(3));
  }
  // As dot_bytes for signed codes (Q8_0): |codes| times x with the codes' signs, so that the
  // first operand is unsigned; a pair's sum is at most 2 * 128 * 127.
  static ireg dot_signed_bytes(ireg codes, ireg x) {
    return dot_bytes(_mm256_abs_epi8(codes), _mm256_sign_epi8(x, codes));
  }
  // Bytes 8Q to 8Q + 7 of v, widened to 8 lanes (unsigned).
  template <int Q>
  static ireg byte_quarter(ireg v) {
    const __m128i half = Q < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
    return _mm256_cvtepu8_epi32(Q % 2 == 0 ? half : _mm_srli_si128(half, 8));
  }
  // Bytes 8Q to 8Q + 7 of v, widened to 8 lanes with their signs.
  template <int Q>
  static ireg signed_byte_quarter(ireg v) {
    const __m128i half = Q < 2 ? _mm256_castsi256_si128(v) : _mm256_extracti128_si256(v, 1);
    return _mm256_cvtepi8_epi32(Q % 2 == 0 ? half : _mm_srli_si128(half, 8));
  }
  // The 16 bytes at p in both 128-bit halves, for look_up.
  static ireg byte_table(const void* p) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(static_cast<const __m128i*>(p)));
  }
  // Byte j: byte index[j] (at most 15) of the table.
  static ireg look_up(ireg table, ireg index) { return _mm256_shuffle_epi8(table, index); }
  // Four 8-byte codebook entries side by side: bytes 8k to 8k + 7 are entry k.
  static ireg four_entries(uint64_t e0, uint64_t e1, uint64_t e2, uint64_t e3) {
    return _mm256_setr_epi64x(static_cast<int64_t>(e0), static_cast<int64_t>(e1),
                              static_cast<int64_t>(e2), static_cast<int64_t>(e3));
  }
  // x with byte j negated where bit j of `signs` is set (x never -128).
  static ireg negate_where(ireg x, uint32_t signs) {
    const ireg spread =
        _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(signs)),
                            _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                             2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    const ireg bit = _mm256_set1_epi64x(0x8040201008040201);
    const ireg set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);  // 0 or -1
    return _mm256_sign_epi8(x, _mm256_or_si256(set, _mm256_set1_epi8(1)));
  }
  // Byte j: the ternary digit of byte j of v that factor j (a power of 3) brings to the top, as
  // 0..2: q = v * factor mod 256, then floor(3 q / 256), which is (q > 85) + (q > 170). AVX2 has
  // no byte multiply: 16-bit ones give the even bytes' low halves and the odd ones' high halves.
  static ireg trits(ireg v, ireg factor) {
    const ireg low = _mm256_set1_epi16(0x00FF);
    const ireg even = _mm256_and_si256(_mm256_mullo_epi16(v, factor), low);
    const ireg odd = _mm256_mullo_epi16(_mm256_andnot_si256(low, v), _mm256_srli_epi16(factor, 8));
    const ireg q = _mm256_xor_si256(_mm256_or_si256(even, _mm256_andnot_si256(low, odd)),
                                    _mm256_set1_epi8(static_cast<char>(0x80)));
    // Signed compares of q - 128 against 85 - 128 and 170 - 128: 0 or -1 each.
    const ireg above_third = _mm256_cmpgt_epi8(q, _mm256_set1_epi8(85 - 128));
    const ireg above_two_thirds = _mm256_cmpgt_epi8(q, _mm256_set1_epi8(170 - 128));
    return _mm256_sub_epi8(_mm256_setzero_si256(), _mm256_add_epi8(above_third, above_two_thirds));
  }
  // The 16 bytes at p, then four copies of w.
  static ireg sixteen_then_word(const void* p, uint32_t w) {
    return _mm256_setr_m128i(_mm_loadu_si128(static_cast<const __m128i*>(p)),
                             _mm_set1_epi32(static_cast<int>(w)));
  }
  // Lanes 0-3 low, lanes 4-7 high (two_broadcasts above for values in memory).
  static reg halves(float low, float high) {
    return _mm256_setr_m128(_mm_set1_ps(low), _mm_set1_ps(high));
  }
  // A K-quant block's 12 bytes of 6-bit scales and mins at p, one sub-block a lane: scale j is
  // byte j's low 6 bits (j < 4) or byte j + 4's low nibble under byte j - 4's top 2 bits; min j
  // is byte j + 4's low 6 bits (j < 4) or byte j + 4's high nibble under byte j's top 2 bits.
  // Shuffles put each one's sources at byte j (scales) and 8 + j (mins) of one vector, which two
  // masks and two shifts finish, in place of a dozen scalar operations per word. Reads 16 bytes.
  static void k_scale_min_lanes(const uint8_t* p, ireg* scales, ireg* mins) {
    const __m128i s = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i low =
        _mm_shuffle_epi8(s, _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11));
    const __m128i top =
        _mm_shuffle_epi8(s, _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7));
    const __m128i low_bits = _mm_and_si128(
        low, _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0));
    const __m128i high_nibbles = _mm_and_si128(
        _mm_srli_epi16(low, 4), _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15));
    // Bits 6-7 to 4-5; the 16-bit shift carries in only the neighbouring byte's masked-off bits.
    const __m128i top_bits = _mm_srli_epi16(_mm_and_si128(top, _mm_set1_epi8(-64)), 2);
    const __m128i both = _mm_or_si128(_mm_or_si128(low_bits, high_nibbles), top_bits);
    *scales = _mm256_cvtepu8_epi32(both);
    *mins = _mm256_cvtepu8_epi32(_mm_unpackhi_epi64(both, both));
  }
  // The 8 bytes of v (byte l in lane l), unsigned.
  static ireg byte_lanes(uint64_t v) {
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<int64_t>(v)));
  }
  // Lanes 2i and 2i + 1: p[i], i = 0..3.
  static reg pairs_of_four(const float* p) {
    return _mm256_permutevar8x32_ps(_mm256_castps128_ps256(_mm_loadu_ps(p)),
                                    _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
  }
  // Lane 2k of v in lanes 0-3, lane 2k + 1 in lanes 4-7.
  static reg lane_pair(reg v, int k) {
    return _mm256_permutevar8x32_ps(v, _mm256_setr_epi32(2 * k, 2 * k, 2 * k, 2 * k, 2 * k + 1,
                                                         2 * k + 1, 2 * k + 1, 2 * k + 1));
  }
};

}  // namespace
