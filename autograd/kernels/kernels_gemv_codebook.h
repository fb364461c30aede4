// The codebook and ternary ggml types against x rounded to int8 (kernels_gemv_int8_blocks.h's
// layout: per 32 elements, in order, with a step dx each); block layouts in
// kernels_gguf_dequant_codebook.h. First the types whose entries are magnitudes with sign bits
// (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S): a 32-value group is four entries of 8 bytes (IQ3's
// 4-value entries in pairs) side by side in one vector, and its 32 sign bits negate x's bytes
// instead of the magnitudes, so the product stays unsigned codes times signed x (vpmaddubsw, or
// vpdpbusd with VNNI; magnitudes at most 62, so a byte pair's sum fits 16 bits). Lanes 0-3 of the
// dot are entries 0 and 1, lanes 4-7 entries 2 and 3: IQ2_XS's and IQ2_S's two scales a group
// meet them as the two halves of one factor vector. Then the types whose values are -1, 0 or 1
// (IQ1_S, IQ1_M, TQ2_0, TQ1_0). With f32 x these types widen their rows
// (frozen_gemv.cpp): converting each 8 values to floats costs as much as widening them. Written
// over a V of 32-byte integer vectors (gemv_avx2_ops.h) for the AVX2 and AVX-512 copies. Internal
// linkage, as kernels_gemv.h.
#pragma once
#include <array>
#include <cstdint>
#include <cstring>

#include "autograd/gguf_iq_grids.h"
#include "autograd/kernels/kernels_gemv.h"

namespace {

// One 32-value group: its four entries, its 32 sign bits (bit j: value j negative) and its
// scales (d included) for entries 0-1 and 2-3.
struct CodebookGroup {
  uint64_t entries[4];
  uint32_t signs;
  float low, high;
};

// The 7 stored sign bits of each of four entries (bits 7l..7l+6 of `word`) as 32 sign bits.
inline uint32_t four_signs_of_seven(uint32_t word) {
  uint32_t signs = 0;
  LORA_GEMV_UNROLL
  for (int l = 0; l < 4; ++l)
    signs |= uint32_t(lora::iq_grids::signs_of_seven(word >> (7 * l))) << (8 * l);
  return signs;
}

inline uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

struct Iq2XxsGroups {
  static constexpr int64_t kBytes = 66, kSumWidth = 0;
  static float scale(const RowsArgs& a, const uint8_t* b) { return half_at(a, b); }
  [[gnu::always_inline]] static CodebookGroup group(const uint8_t* b, int g, float d) {
    const uint8_t* q = b + 2 + 8 * g;
    const uint32_t word = u32_at(q + 4);
    const float s = lora::iq_grids::iq2_group_scale(d, static_cast<int>(word >> 28));
    using lora::iq_grids::kIq2Xxs;
    return {{kIq2Xxs[q[0]], kIq2Xxs[q[1]], kIq2Xxs[q[2]], kIq2Xxs[q[3]]},
            four_signs_of_seven(word),
            s,
            s};
  }
};

struct Iq2XsGroups {
  static constexpr int64_t kBytes = 74, kSumWidth = 0;
  static float scale(const RowsArgs& a, const uint8_t* b) { return half_at(a, b); }
  [[gnu::always_inline]] static CodebookGroup group(const uint8_t* b, int g, float d) {
    CodebookGroup out{};
    LORA_GEMV_UNROLL
    for (int l = 0; l < 4; ++l) {
      uint16_t q;
      std::memcpy(&q, b + 2 + 2 * (4 * g + l), 2);
      out.entries[l] = lora::iq_grids::kIq2Xs[q & 511];
      out.signs |= uint32_t(lora::iq_grids::signs_of_seven(q >> 9)) << (8 * l);
    }
    out.low = lora::iq_grids::iq2_group_scale(d, b[66 + g] & 15);
    out.high = lora::iq_grids::iq2_group_scale(d, b[66 + g] >> 4);
    return out;
  }
};

struct Iq2SGroups {
  static constexpr int64_t kBytes = 82, kSumWidth = 0;
  static float scale(const RowsArgs& a, const uint8_t* b) { return half_at(a, b); }
  [[gnu::always_inline]] static CodebookGroup group(const uint8_t* b, int g, float d) {
    CodebookGroup out{};
    const int high = b[66 + g];
    LORA_GEMV_UNROLL
    for (int l = 0; l < 4; ++l)
      out.entries[l] = lora::iq_grids::kIq2S[b[2 + 4 * g + l] | ((high << (8 - 2 * l)) & 0x300)];
    out.signs = u32_at(b + 34 + 4 * g);
    out.low = lora::iq_grids::iq2_group_scale(d, b[74 + g] & 15);
    out.high = lora::iq_grids::iq2_group_scale(d, b[74 + g] >> 4);
    return out;
  }
};

struct Iq3XxsGroups {
  static constexpr int64_t kBytes = 98, kSumWidth = 0;
  static float scale(const RowsArgs& a, const uint8_t* b) { return half_at(a, b); }
  [[gnu::always_inline]] static CodebookGroup group(const uint8_t* b, int g, float d) {
    const uint8_t* q = b + 2 + 8 * g;
    const uint32_t word = u32_at(b + 66 + 4 * g);
    const float s = d * (0.5f + static_cast<float>(word >> 28)) * 0.5f;
    CodebookGroup out{{}, four_signs_of_seven(word), s, s};
    LORA_GEMV_UNROLL
    for (int l = 0; l < 4; ++l)
      out.entries[l] =
          lora::iq_grids::kIq3Xxs[q[2 * l]] | uint64_t(lora::iq_grids::kIq3Xxs[q[2 * l + 1]]) << 32;
    return out;
  }
};

struct Iq3SGroups {
  static constexpr int64_t kBytes = 110, kSumWidth = 0;
  static float scale(const RowsArgs& a, const uint8_t* b) { return half_at(a, b); }
  [[gnu::always_inline]] static CodebookGroup group(const uint8_t* b, int g, float d) {
    const uint8_t* q = b + 2 + 8 * g;
    const int high = b[66 + g];
    const float s = d * static_cast<float>(1 + 2 * ((b[106 + g / 2] >> (4 * (g % 2))) & 15));
    CodebookGroup out{{}, u32_at(b + 74 + 4 * g), s, s};
    LORA_GEMV_UNROLL
    for (int l = 0; l < 4; ++l)
      out.entries[l] =
          lora::iq_grids::kIq3S[q[2 * l] | ((high >> (2 * l)) & 1) << 8] |
          uint64_t(lora::iq_grids::kIq3S[q[2 * l + 1] | ((high >> (2 * l + 1)) & 1) << 8]) << 32;
    return out;
  }
};

// The types whose values are -1, 0 or 1 under a scale, plus a shift (IQ1_S, IQ1_M: +-1/8 per
// group or entry) or not (TQ2_0): the codes become unsigned as value + 1, so a group's dot is
// scale (dx (codes . xq) + (shift - 1) sum(x)), the last term from x's exact sums (per 32, or
// per 8 for IQ1_M's per-entry shifts) as the other types' offsets are.
template <class V>
struct OffsetGroup {
  typename V::ireg codes;  // values + 1, 32 unsigned bytes
  float low, high;         // the scales of entries 0-1 and 2-3
  float offset;            // the group's sum over its parts of scale (shift - 1) sum(x)
};

struct Iq1SGroups {
  static constexpr int64_t kBytes = 50, kSumWidth = 32;
  static float scale(const RowsArgs& a, const uint8_t* b) { return half_at(a, b); }
  template <class V>
  [[gnu::always_inline]] static OffsetGroup<V> group(const uint8_t* b, int g, float d,
                                                     const float* sums) {
    uint16_t word;
    std::memcpy(&word, b + 34 + 2 * g, 2);
    const float dl = d * static_cast<float>(2 * ((word >> 12) & 7) + 1);
    const float shift = lora::iq_grids::iq1_shift(word >> 15);
    uint64_t e[4];
    LORA_GEMV_UNROLL
    for (int l = 0; l < 4; ++l)
      e[l] = lora::iq_grids::kIq1SUnsigned[b[2 + 4 * g + l] | ((word >> (3 * l)) & 7) << 8];
    return {V::four_entries(e[0], e[1], e[2], e[3]), dl, dl, dl * (shift - 1.0f) * sums[0]};
  }
};

struct Iq1MGroups {
  static constexpr int64_t kBytes = 56, kSumWidth = 8;
  // d's f16 bits are the top nibbles of the four scale words.
  static float scale(const RowsArgs& a, const uint8_t* b) {
    uint16_t sc[4];
    std::memcpy(sc, b + 48, 8);
    return a.halves[(sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) |
                    (sc[3] & 0xf000)];
  }
  template <class V>
  [[gnu::always_inline]] static OffsetGroup<V> group(const uint8_t* b, int g, float d,
                                                     const float* sums) {
    uint16_t word;
    std::memcpy(&word, b + 48 + 2 * (g / 2), 2);
    const int scales = word >> (6 * (g % 2));
    const float dl[2] = {d * static_cast<float>(2 * (scales & 7) + 1),
                         d * static_cast<float>(2 * ((scales >> 3) & 7) + 1)};
    uint64_t e[4];
    float offset = 0.0f;
    LORA_GEMV_UNROLL
    for (int l = 0; l < 4; ++l) {
      const int high = b[32 + 2 * g + l / 2] >> (4 * (l % 2));
      e[l] = lora::iq_grids::kIq1SUnsigned[b[4 * g + l] | (high & 7) << 8];
      offset += dl[l / 2] * (lora::iq_grids::iq1_shift((high >> 3) & 1) - 1.0f) * sums[l];
    }
    return {V::four_entries(e[0], e[1], e[2], e[3]), dl[0], dl[1], offset};
  }
};

// TQ2_0: group g is bit pair 2 (g % 4) of bytes 32 (g / 4) .. + 31; d after the codes.
struct Tq2Groups {
  static constexpr int64_t kBytes = 66, kSumWidth = 32;
  static float scale(const RowsArgs& a, const uint8_t* b) { return half_at(a, b + 64); }
  template <class V>
  [[gnu::always_inline]] static OffsetGroup<V> group(const uint8_t* b, int g, float d,
                                                     const float* sums) {
    const auto codes = V::byte_bit_pair(V::load_bytes(b + 32 * (g / 4)), 2 * (g % 4));
    return {codes, d, d, -d * sums[0]};
  }
};

// TQ1_0: groups 0-4 are trit g of bytes 0-31; groups 5 and 6 trits 2g - 10 and 2g - 9 of bytes
// 32-47, one a half; group 7 trit 4 of bytes 32-47, then trits 0-3 of bytes 48-51 (four bytes a
// trit); d after them. A group's bytes times its powers of 3 bring each trit to the top byte.
struct Tq1Groups {
  static constexpr int64_t kBytes = 54, kSumWidth = 32;
  static float scale(const RowsArgs& a, const uint8_t* b) { return half_at(a, b + 52); }
  template <class V>
  [[gnu::always_inline]] static OffsetGroup<V> group(const uint8_t* b, int g, float d,
                                                     const float* sums) {
    // Per group, each byte's power of 3: the trit it brings to the top.
    static constexpr auto kFactors = [] {
      constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
      std::array<std::array<uint8_t, 32>, 8> f{};
      for (int group = 0; group < 8; ++group)
        for (int j = 0; j < 32; ++j)
          f[group][j] = group < 5   ? kPow3[group]
                        : group < 7 ? kPow3[2 * (group - 5) + j / 16]
                        : j < 16    ? kPow3[4]
                                    : kPow3[(j - 16) / 4];
      return f;
    }();
    typename V::ireg bytes;
    if (g < 5) {
      bytes = V::load_bytes(b);
    } else if (g < 7) {
      bytes = V::byte_table(b + 32);
    } else {
      uint32_t last;
      std::memcpy(&last, b + 48, 4);
      bytes = V::sixteen_then_word(b + 32, last);
    }
    return {V::trits(bytes, V::load_bytes(kFactors[g].data())), d, d, -d * sums[0]};
  }
};

// One kernel for both families: a sign type's group negates x's bytes; an offset type's group
// brings its term of x's exact sums (kSumWidth elements a sum).
template <class V, class C, int R>
void codebook_int8_rows_at(const RowsArgs& a, int64_t r0) {
  static_assert(V::W == 8, "a 32-value group is one vector of bytes");
  const int64_t blocks = a.cols / 256;
  typename V::reg acc[R];
  float offset[R] = {};
  const uint8_t* rows[R];
  start_rows<V, R>(a, r0, acc, rows);
  for (int64_t b = 0; b < blocks; ++b) {
    prefetch_next_rows<R>(a, r0, C::kBytes * b, C::kBytes);
    float d[R];
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) d[r] = C::scale(a, rows[r] + C::kBytes * b);
    for (int g = 0; g < 8; ++g) {
      const auto xq = V::load_bytes(a.x_low + 256 * b + 32 * g);
      const float dx = a.x_scales[8 * b + g];
      LORA_GEMV_UNROLL
      for (int r = 0; r < R; ++r) {
        const uint8_t* block = rows[r] + C::kBytes * b;
        typename V::reg dot;
        float low, high;
        if constexpr (C::kSumWidth == 0) {
          const CodebookGroup q = C::group(block, g, d[r]);
          const auto magnitudes =
              V::four_entries(q.entries[0], q.entries[1], q.entries[2], q.entries[3]);
          dot = V::to_float(V::dot_bytes(magnitudes, V::negate_where(xq, q.signs)));
          low = q.low, high = q.high;
        } else {
          const float* sums = a.sums + (32 / C::kSumWidth) * (8 * b + g);
          const auto q = C::template group<V>(block, g, d[r], sums);
          dot = V::to_float(V::dot_bytes(q.codes, xq));
          low = q.low, high = q.high;
          offset[r] += q.offset;
        }
        acc[r] = V::fmadd(dot, V::halves(low * dx, high * dx), acc[r]);
      }
    }
  }
  if constexpr (C::kSumWidth == 0) {
    store_rows<V, R>(a, r0, acc);
  } else {
    LORA_GEMV_UNROLL
    for (int r = 0; r < R; ++r) store_row(a.y, r0 + r, V::hsum(acc[r]) + offset[r], a.beta);
  }
}

// `k` with the codebook int8 kernels on V.
template <class V>
constexpr lora::gemv::Kernels with_codebook_int8_blocks(lora::gemv::Kernels k) {
  k.iq2_xxs_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Iq2XxsGroups, 4>,
                                  &codebook_int8_rows_at<V, Iq2XxsGroups, 1>>;
  k.iq2_xs_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Iq2XsGroups, 4>,
                                 &codebook_int8_rows_at<V, Iq2XsGroups, 1>>;
  k.iq2_s_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Iq2SGroups, 4>,
                                &codebook_int8_rows_at<V, Iq2SGroups, 1>>;
  k.iq3_xxs_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Iq3XxsGroups, 4>,
                                  &codebook_int8_rows_at<V, Iq3XxsGroups, 1>>;
  k.iq3_s_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Iq3SGroups, 4>,
                                &codebook_int8_rows_at<V, Iq3SGroups, 1>>;
  k.iq1_s_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Iq1SGroups, 4>,
                                &codebook_int8_rows_at<V, Iq1SGroups, 1>>;
  k.iq1_m_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Iq1MGroups, 4>,
                                &codebook_int8_rows_at<V, Iq1MGroups, 1>>;
  k.tq2_0_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Tq2Groups, 4>,
                                &codebook_int8_rows_at<V, Tq2Groups, 1>>;
  k.tq1_0_int8 = &rows_in_fours<&codebook_int8_rows_at<V, Tq1Groups, 4>,
                                &codebook_int8_rows_at<V, Tq1Groups, 1>>;
  return k;
}

}  // namespace
