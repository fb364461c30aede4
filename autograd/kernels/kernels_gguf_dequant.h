// The block loops that widen ggml rows to f32, written so the compiler vectorizes them. This file
// is compiled once per instruction set (kernels/gguf_dequant_{avx2,avx512}.cpp with their own
// -m flags, and the baseline in gguf_quant.cpp); everything here has internal linkage so the
// copies never meet at link time. The caller picks the copy at run time.
#pragma once
#include <cstdint>
#include <cstring>

#include "autograd/dtype.h"
#include "autograd/gguf_quant.h"
#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace {

inline float load_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return lora::f16_to_f32(h);
#endif
}

void f16_row(const uint8_t* src, int64_t n, float* y) {
  int64_t i = 0;
#if defined(__F16C__) && defined(__AVX__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(
        y + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))));
#endif
  for (; i < n; ++i) y[i] = load_f16(src + 2 * i);
}

void bf16_row(const uint8_t* src, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t bits = uint32_t(src[2 * i]) << 16 | uint32_t(src[2 * i + 1]) << 24;
    std::memcpy(y + i, &bits, 4);
  }
}

// 32-element blocks: the codes of byte j are elements j (low nibble) and j + 16 (high nibble).
void q4_0_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>((qs[j] & 15) - 8) * d;
    y[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
  }
}

void q4_1_block(const uint8_t* b, float* y) {
  const float d = load_f16(b), m = load_f16(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(qs[j] & 15) * d + m;
    y[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
  }
}

// Q5: the fifth bit of element j is bit j of the 32-bit qh.
void q5_block(const uint8_t* qs, uint32_t qh, float d, float m, int offset, float* y) {
  for (int j = 0; j < 16; ++j) {
    const int lo = (qs[j] & 15) | static_cast<int>(((qh >> j) & 1u) << 4);
    const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
    y[j] = static_cast<float>(lo - offset) * d + m;
    y[j + 16] = static_cast<float>(hi - offset) * d + m;
  }
}

void q5_0_block(const uint8_t* b, float* y) {
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  q5_block(b + 6, qh, load_f16(b), 0.0f, 16, y);
}

void q5_1_block(const uint8_t* b, float* y) {
  uint32_t qh;
  std::memcpy(&qh, b + 4, 4);
  q5_block(b + 8, qh, load_f16(b), load_f16(b + 2), 0, y);
}

void q8_0_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(qs[j]) * d;
}

// K-quants, 256 elements. Q2_K: 16 sub-blocks of 16 with a 4-bit scale and 4-bit min each; each
// 128-element half reads 32 code bytes four times, two bits further each time.
void q2_k_block(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = load_f16(b + 80), dmin = load_f16(b + 82);
  int is = 0;
  for (int half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part, ++is) {
        const float dl = d * static_cast<float>(scales[is] & 15);
        const float ml = dmin * static_cast<float>(scales[is] >> 4);
        const uint8_t* qp = q + 16 * part;
        for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((qp[l] >> shift) & 3) - ml;
      }
    }
  }
}

// Q3_K: 2 low bits as Q2_K, the third from hmask (a set bit means +4 over the -4 offset), 16
// six-bit scales packed in 12 bytes (low nibbles in bytes 0..7, high pairs in bytes 8..11).
void q3_k_scales(const uint8_t* s, int* out) {
  for (int k = 0; k < 16; ++k) {
    const int low = k < 8 ? (s[k] & 15) : (s[k - 8] >> 4);
    const int high = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
    out[k] = (low | high << 4) - 32;
  }
}

void q3_k_block(const uint8_t* b, float* y) {
  const uint8_t* hmask = b;
  const uint8_t* q = b + 32;
  int scales[16];
  q3_k_scales(b + 96, scales);
  const float d = load_f16(b + 108);
  int is = 0;
  uint8_t m = 1;
  for (int half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, m = static_cast<uint8_t>(m << 1)) {
      for (int part = 0; part < 2; ++part, ++is) {
        const float dl = d * static_cast<float>(scales[is]);
        const uint8_t* qp = q + 16 * part;
        const uint8_t* hp = hmask + 16 * part;
        for (int l = 0; l < 16; ++l) {
          const int code = ((qp[l] >> shift) & 3) - ((hp[l] & m) ? 0 : 4);
          *y++ = dl * static_cast<float>(code);
        }
      }
    }
  }
}

// Q4_K/Q5_K: 8 sub-blocks of 32, each with a 6-bit scale and 6-bit min packed in 12 bytes.
void k_scale_min(int j, const uint8_t* s, float* sc, float* mn) {
  if (j < 4) {
    *sc = static_cast<float>(s[j] & 63);
    *mn = static_cast<float>(s[j + 4] & 63);
  } else {
    *sc = static_cast<float>((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
    *mn = static_cast<float>((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
  }
}

void q4_k_block(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0; j < 8; j += 2, q += 32, y += 64) {
    float s1, m1, s2, m2;
    k_scale_min(j, scales, &s1, &m1);
    k_scale_min(j + 1, scales, &s2, &m2);
    const float d1 = d * s1, o1 = dmin * m1, d2 = d * s2, o2 = dmin * m2;
    for (int l = 0; l < 32; ++l) y[l] = d1 * static_cast<float>(q[l] & 15) - o1;
    for (int l = 0; l < 32; ++l) y[l + 32] = d2 * static_cast<float>(q[l] >> 4) - o2;
  }
}

void q5_k_block(const uint8_t* b, float* y) {
  const float d = load_f16(b), dmin = load_f16(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* q = b + 48;
  for (int j = 0; j < 8; j += 2, q += 32, y += 64) {
    float s1, m1, s2, m2;
    k_scale_min(j, scales, &s1, &m1);
    k_scale_min(j + 1, scales, &s2, &m2);
    const float d1 = d * s1, o1 = dmin * m1, d2 = d * s2, o2 = dmin * m2;
    for (int l = 0; l < 32; ++l)
      y[l] = d1 * static_cast<float>((q[l] & 15) | (((qh[l] >> j) & 1) << 4)) - o1;
    for (int l = 0; l < 32; ++l)
      y[l + 32] = d2 * static_cast<float>((q[l] >> 4) | (((qh[l] >> (j + 1)) & 1) << 4)) - o2;
  }
}

// Q6_K: 4 low bits in ql, 2 high bits in qh, 16 int8 scales; codes are offset by 32.
void q6_k_block(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = load_f16(b + 208);
  for (int half = 0; half < 2; ++half, ql += 64, qh += 32, sc += 8, y += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 15) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
    }
  }
}

// 32 codes (16 bytes: element j in the low nibble of byte j, element j + 16 in its high one) as
// their levels (a table of 16: kIq4Values, MXFP4's) times `scale`. With AVX2 the table is one
// register and vpshufb looks the levels up 16 codes at a time; a table lookup does not vectorize
// by itself.
void levels_times(const int8_t (&levels)[16], const uint8_t* qs, float scale, float* y) {
#if defined(__AVX2__)
  const __m128i table = _mm_loadu_si128(reinterpret_cast<const __m128i*>(levels));
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i low = _mm_set1_epi8(15);
  const __m128i lo = _mm_shuffle_epi8(table, _mm_and_si128(bytes, low));
  const __m128i hi = _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(bytes, 4), low));
  const __m256 s = _mm256_set1_ps(scale);
  auto put8 = [&](__m128i levels, float* out) {
    _mm256_storeu_ps(out, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(levels)), s));
  };
  put8(lo, y);
  put8(_mm_srli_si128(lo, 8), y + 8);
  put8(hi, y + 16);
  put8(_mm_srli_si128(hi, 8), y + 24);
#else
  for (int j = 0; j < 16; ++j) {
    y[j] = static_cast<float>(levels[qs[j] & 15]) * scale;
    y[j + 16] = static_cast<float>(levels[qs[j] >> 4]) * scale;
  }
#endif
}

void iq4_levels_times(const uint8_t* qs, float scale, float* y) {
  levels_times(lora::kIq4Values, qs, scale, y);
}

// IQ4_NL: the Q4_0 layout, its codes indexing kIq4Values.
void iq4_nl_block(const uint8_t* b, float* y) { iq4_levels_times(b + 2, load_f16(b), y); }

// IQ4_XS: eight IQ4_NL-like sub-blocks of 32 under one f16 d, sub-block s scaled by d * (l - 32)
// with l's low four bits in nibble s % 2 of scales_l[s / 2] and its high two at bits 2s of
// scales_h.
void iq4_xs_block(const uint8_t* b, float* y) {
  const float d = load_f16(b);
  uint16_t high_bits;
  std::memcpy(&high_bits, b + 2, 2);
  for (int sub = 0; sub < 8; ++sub) {
    const int l = ((b[4 + sub / 2] >> (4 * (sub % 2))) & 15) | ((high_bits >> (2 * sub)) & 3) << 4;
    iq4_levels_times(b + 8 + 16 * sub, d * static_cast<float>(l - 32), y + 32 * sub);
  }
}

}  // namespace

#include "autograd/kernels/kernels_gguf_dequant_codebook.h"

namespace {

template <void (*Block)(const uint8_t*, float*)>
void blocks(const uint8_t* src, int64_t n, int64_t elems, int64_t bytes, float* y) {
  for (int64_t i = 0; i < n / elems; ++i) Block(src + i * bytes, y + i * elems);
}

// Widens n elements of type t (whole blocks; checked by the caller).
void dequantize_row_blocks(lora::GgmlType t, const uint8_t* src, int64_t n, float* y) {
  using lora::GgmlType;
  switch (t) {
    case GgmlType::F32:
      std::memcpy(y, src, static_cast<std::size_t>(n) * 4);
      return;
    case GgmlType::F16:
      return f16_row(src, n, y);
    case GgmlType::BF16:
      return bf16_row(src, n, y);
    case GgmlType::Q4_0:
      return blocks<q4_0_block>(src, n, 32, 18, y);
    case GgmlType::Q4_1:
      return blocks<q4_1_block>(src, n, 32, 20, y);
    case GgmlType::Q5_0:
      return blocks<q5_0_block>(src, n, 32, 22, y);
    case GgmlType::Q5_1:
      return blocks<q5_1_block>(src, n, 32, 24, y);
    case GgmlType::Q8_0:
      return blocks<q8_0_block>(src, n, 32, 34, y);
    case GgmlType::Q2_K:
      return blocks<q2_k_block>(src, n, 256, 84, y);
    case GgmlType::Q3_K:
      return blocks<q3_k_block>(src, n, 256, 110, y);
    case GgmlType::Q4_K:
      return blocks<q4_k_block>(src, n, 256, 144, y);
    case GgmlType::Q5_K:
      return blocks<q5_k_block>(src, n, 256, 176, y);
    case GgmlType::Q6_K:
      return blocks<q6_k_block>(src, n, 256, 210, y);
    case GgmlType::IQ4_NL:
      return blocks<iq4_nl_block>(src, n, 32, 18, y);
    case GgmlType::IQ4_XS:
      return blocks<iq4_xs_block>(src, n, 256, 136, y);
    case GgmlType::IQ2_XXS:
      return blocks<iq2_xxs_block>(src, n, 256, 66, y);
    case GgmlType::IQ2_XS:
      return blocks<iq2_xs_block>(src, n, 256, 74, y);
    case GgmlType::IQ2_S:
      return blocks<iq2_s_block>(src, n, 256, 82, y);
    case GgmlType::IQ3_XXS:
      return blocks<iq3_xxs_block>(src, n, 256, 98, y);
    case GgmlType::IQ3_S:
      return blocks<iq3_s_block>(src, n, 256, 110, y);
    case GgmlType::IQ1_S:
      return blocks<iq1_s_block>(src, n, 256, 50, y);
    case GgmlType::IQ1_M:
      return blocks<iq1_m_block>(src, n, 256, 56, y);
    case GgmlType::TQ1_0:
      return blocks<tq1_0_block>(src, n, 256, 54, y);
    case GgmlType::TQ2_0:
      return blocks<tq2_0_block>(src, n, 256, 66, y);
    case GgmlType::MXFP4:
      return blocks<mxfp4_block>(src, n, 32, 17, y);
  }
}

}  // namespace
