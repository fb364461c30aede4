// The block loops that widen the read-only ggml types (gguf_quant.h): the codebook types (IQ1_S,
// IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S: every 8 values of a 32-value group are one
// entry of a codebook, gguf_iq_grids.h, under the group's scale), the ternary TQ1_0 and TQ2_0,
// and MXFP4. Block by block and entry by entry, where the reference in gguf_quant.cpp computes
// each element on its own; the products are formed in the format's own order, so both give the
// floats llama.cpp's decoders give. Part of kernels_gguf_dequant.h (internal linkage, compiled
// once per instruction set).
#pragma once
#include <cstdint>
#include <cstring>

#include "autograd/gguf_iq_grids.h"

namespace {

#if defined(__AVX2__)
// The entry's 8 bytes as 8 float lanes, unsigned or signed.
inline __m256 entry_lanes(uint64_t entry, bool is_signed) {
  const __m128i bytes = _mm_cvtsi64_si128(static_cast<int64_t>(entry));
  return _mm256_cvtepi32_ps(is_signed ? _mm256_cvtepi8_epi32(bytes) : _mm256_cvtepu8_epi32(bytes));
}
#endif

// An entry's 8 magnitudes times db, value k negated where bit k of signs is set. With AVX2 in
// lanes: the negation flips the sign bit, which is what multiplying by -1 does.
inline void signed_entry(uint64_t entry, uint8_t signs, float db, float* y) {
#if defined(__AVX2__)
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(signs), bit), bit);
  const __m256 sign = _mm256_castsi256_ps(_mm256_slli_epi32(set, 31));
  const __m256 v = _mm256_mul_ps(_mm256_set1_ps(db), entry_lanes(entry, false));
  _mm256_storeu_ps(y, _mm256_xor_ps(v, sign));
#else
  for (int k = 0; k < 8; ++k)
    y[k] = db * static_cast<float>(static_cast<uint8_t>(entry >> (8 * k))) *
           ((signs >> k) & 1 ? -1.0f : 1.0f);
#endif
}

// Two 4-value IQ3 entries as one of 8 values.
inline uint64_t entry_pair(uint32_t first, uint32_t second) {
  return first | uint64_t(second) << 32;
}

// IQ2_XXS: d, then per group of 32 four entry bytes and a word holding 4 x 7 signs and the scale.
void iq2_xxs_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int g = 0; g < 8; ++g, y += 32) {
    uint32_t word;
    std::memcpy(&word, b + 2 + 8 * g + 4, 4);
    const float db = lora::iq_grids::iq2_group_scale(d, static_cast<int>(word >> 28));
    for (int l = 0; l < 4; ++l)
      signed_entry(lora::iq_grids::kIq2Xxs[b[2 + 8 * g + l]],
                   lora::iq_grids::signs_of_seven(word >> (7 * l)), db, y + 8 * l);
  }
}

// IQ2_XS: d, 32 words (a 9-bit entry and 7 signs), then a byte of two 4-bit scales per group.
void iq2_xs_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int g = 0; g < 8; ++g, y += 32)
    for (int l = 0; l < 4; ++l) {
      uint16_t q;
      std::memcpy(&q, b + 2 + 2 * (4 * g + l), 2);
      const float db = lora::iq_grids::iq2_group_scale(d, (b[66 + g] >> (4 * (l / 2))) & 15);
      signed_entry(lora::iq_grids::kIq2Xs[q & 511], lora::iq_grids::signs_of_seven(q >> 9), db,
                   y + 8 * l);
    }
}

// IQ2_S: d, 32 entry bytes, 32 sign bytes, a byte of four entries' high bit pairs per group, and
// a byte of two scales per group.
void iq2_s_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int g = 0; g < 8; ++g, y += 32)
    for (int l = 0; l < 4; ++l) {
      const int entry = b[2 + 4 * g + l] | ((b[66 + g] << (8 - 2 * l)) & 0x300);
      const float db = lora::iq_grids::iq2_group_scale(d, (b[74 + g] >> (4 * (l / 2))) & 15);
      signed_entry(lora::iq_grids::kIq2S[entry], b[34 + 4 * g + l], db, y + 8 * l);
    }
}

// IQ3_XXS: d, 64 entry bytes of 4 values each, then per group a word as IQ2_XXS's.
void iq3_xxs_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int g = 0; g < 8; ++g, y += 32) {
    uint32_t word;
    std::memcpy(&word, b + 66 + 4 * g, 4);
    const float db = d * (0.5f + static_cast<float>(word >> 28)) * 0.5f;
    const uint8_t* q = b + 2 + 8 * g;
    for (int l = 0; l < 4; ++l)
      signed_entry(
          entry_pair(lora::iq_grids::kIq3Xxs[q[2 * l]], lora::iq_grids::kIq3Xxs[q[2 * l + 1]]),
          lora::iq_grids::signs_of_seven(word >> (7 * l)), db, y + 8 * l);
  }
}

// IQ3_S: d, 64 entry bytes, a byte of 8 entries' ninth bits per group, 32 sign bytes, and 4
// bytes of two 4-bit scales d (1 + 2 s).
void iq3_s_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int g = 0; g < 8; ++g, y += 32) {
    const float db = d * static_cast<float>(1 + 2 * ((b[106 + g / 2] >> (4 * (g % 2))) & 15));
    const uint8_t* q = b + 2 + 8 * g;
    const int high = b[66 + g];
    for (int l = 0; l < 4; ++l) {
      const uint32_t first = lora::iq_grids::kIq3S[q[2 * l] | ((high >> (2 * l)) & 1) << 8];
      const uint32_t second =
          lora::iq_grids::kIq3S[q[2 * l + 1] | ((high >> (2 * l + 1)) & 1) << 8];
      signed_entry(entry_pair(first, second), b[74 + 4 * g + l], db, y + 8 * l);
    }
  }
}

// An IQ1 entry's 8 values (-1, 0 or 1) plus delta, times dl.
inline void shifted_entry(uint64_t entry, float delta, float dl, float* y) {
#if defined(__AVX2__)
  const __m256 v = _mm256_add_ps(entry_lanes(entry, true), _mm256_set1_ps(delta));
  _mm256_storeu_ps(y, _mm256_mul_ps(_mm256_set1_ps(dl), v));
#else
  for (int k = 0; k < 8; ++k)
    y[k] = dl * (static_cast<float>(static_cast<int8_t>(entry >> (8 * k))) + delta);
#endif
}

// IQ1_S: d, 32 entry bytes, then per group a word: 4 x 3 high entry bits, a 3-bit scale and the
// sign of the group's shift of +-1/8.
void iq1_s_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  for (int g = 0; g < 8; ++g, y += 32) {
    uint16_t word;
    std::memcpy(&word, b + 34 + 2 * g, 2);
    const float dl = d * static_cast<float>(2 * ((word >> 12) & 7) + 1);
    const float delta = lora::iq_grids::iq1_shift(word >> 15);
    for (int l = 0; l < 4; ++l)
      shifted_entry(lora::iq_grids::kIq1S[b[2 + 4 * g + l] | ((word >> (3 * l)) & 7) << 8], delta,
                    dl, y + 8 * l);
  }
}

// IQ1_M: 32 entry bytes, a nibble per entry (3 high entry bits and its shift's sign), and 4 words
// holding two 3-bit scales per group in their low 12 bits and d's f16 bits in their top nibbles.
void iq1_m_block(const uint8_t* b, float* y) {
  uint16_t sc[4];
  std::memcpy(sc, b + 48, 8);
  const float d = lora::f16_to_f32(static_cast<uint16_t>(
      (sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000)));
  for (int g = 0; g < 8; ++g, y += 32)
    for (int l = 0; l < 4; ++l) {
      const int scale = (sc[g / 2] >> (6 * (g % 2) + 3 * (l / 2))) & 7;
      const uint8_t high = b[32 + 2 * g + l / 2] >> (4 * (l % 2));
      shifted_entry(lora::iq_grids::kIq1S[b[4 * g + l] | (high & 7) << 8],
                    lora::iq_grids::iq1_shift((high >> 3) & 1),
                    d * static_cast<float>(2 * scale + 1), y + 8 * l);
    }
}

// Trit n of byte q (five to a byte, base 3, most significant first once scaled): the top of
// 3 (q 3^n mod 256) / 256, as -1, 0 or 1.
inline float trit(uint8_t q, uint8_t pow3) {
  const auto scaled = static_cast<uint8_t>(q * pow3);
  return static_cast<float>(((scaled * 3) >> 8) - 1);
}

// TQ1_0: 48 bytes of five trits (bytes 0-31 give elements 0-159, trit n of byte m being element
// 32n + m; bytes 32-47 elements 160-239 likewise by 16), 4 bytes of four (elements 240-255), d.
void tq1_0_block(const uint8_t* b, float* y) {
  static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
  const float d = load_f16(b + 52);
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 32; ++m) *y++ = trit(b[m], kPow3[n]) * d;
  for (int n = 0; n < 5; ++n)
    for (int m = 0; m < 16; ++m) *y++ = trit(b[32 + m], kPow3[n]) * d;
  for (int n = 0; n < 4; ++n)
    for (int m = 0; m < 4; ++m) *y++ = trit(b[48 + m], kPow3[n]) * d;
}

// TQ2_0: 64 bytes of four 2-bit codes (element 128h + 32n + m in bits 2n of byte 32h + m), d;
// w = (code - 1) d.
void tq2_0_block(const uint8_t* b, float* y) {
  const float d = load_f16(b + 64);
  for (int h = 0; h < 2; ++h)
    for (int n = 0; n < 4; ++n)
      for (int m = 0; m < 32; ++m)
        *y++ = static_cast<float>(((b[32 * h + m] >> (2 * n)) & 3) - 1) * d;
}

// MXFP4: an E8M0 scale (2^(e - 127), halved as the levels are doubled), then Q4_0's nibble
// order over the 16 doubled E2M1 levels.
void mxfp4_block(const uint8_t* b, float* y) {
  static constexpr int8_t kLevels[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
  const uint32_t bits = b[0] < 2 ? uint32_t(0x00200000) << b[0] : uint32_t(b[0] - 1) << 23;
  float d;
  std::memcpy(&d, &bits, 4);
  levels_times(kLevels, b + 1, d, y);
}

}  // namespace
