// Random ggml matrices for the GGUF tests: valid blocks of any type with small, finite scales.
#pragma once
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "autograd/dtype.h"
#include "autograd/gguf_quant.h"

namespace lora::test {

// Byte offsets of the f16 scale fields in one block of `t` (random bytes there could be inf/NaN).
inline std::vector<int> ggml_scale_offsets(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
    case GgmlType::Q5_0:
    case GgmlType::Q8_0:
    case GgmlType::IQ4_NL:
    case GgmlType::IQ4_XS:
    case GgmlType::IQ2_XXS:
    case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S:
    case GgmlType::IQ3_XXS:
    case GgmlType::IQ3_S:
    case GgmlType::IQ1_S:
      return {0};
    case GgmlType::TQ1_0:
      return {52};
    case GgmlType::TQ2_0:
      return {64};
    case GgmlType::Q4_1:
    case GgmlType::Q5_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
      return {0, 2};
    case GgmlType::Q2_K:
      return {80, 82};
    case GgmlType::Q3_K:
      return {108};
    case GgmlType::Q6_K:
      return {208};
    default:
      return {};
  }
}

// The largest |code x sub-block scale| a block of `t` can hold: its scale fields times this bound
// the weights' magnitude.
inline float ggml_code_range(GgmlType t) {
  switch (t) {
    case GgmlType::Q4_0:
      return 8;
    case GgmlType::Q4_1:
      return 15;
    case GgmlType::Q5_0:
      return 16;
    case GgmlType::Q5_1:
      return 31;
    case GgmlType::Q8_0:
    case GgmlType::IQ4_NL:
      return 127;
    case GgmlType::IQ4_XS:
      return 127 * 32;
    case GgmlType::Q2_K:
      return 45;
    case GgmlType::Q3_K:
      return 128;
    case GgmlType::Q4_K:
      return 945;
    case GgmlType::Q5_K:
      return 1953;
    case GgmlType::Q6_K:
      return 4096;
    case GgmlType::IQ2_XXS:  // (15 + 1/2) / 4 x 43
    case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S:
      return 167;
    case GgmlType::IQ3_XXS:  // (15 + 1/2) / 2 x 62
      return 481;
    case GgmlType::IQ3_S:  // (1 + 2 x 15) x 15
      return 465;
    case GgmlType::IQ1_S:  // 15 x (1 + 1/8)
    case GgmlType::IQ1_M:
      return 17;
    case GgmlType::MXFP4:
      return 12;
    default:
      return 1;
  }
}

// A [rows, cols] matrix of `t`: float types hold N(0, max_abs / 2) values, block types random
// codes and scales with dequantized values within about max_abs.
inline std::vector<std::byte> random_ggml_bytes(GgmlType t, int64_t rows, int64_t cols,
                                                unsigned seed, float max_abs = 1.0f) {
  std::mt19937 rng(seed);
  const int64_t n = rows * cols;
  std::vector<std::byte> out(ggml_row_bytes(t, cols) * static_cast<uint64_t>(rows));
  if (ggml_block_elems(t) == 1) {
    std::normal_distribution<float> nd(0.0f, 0.5f * max_abs);
    std::vector<float> v(static_cast<std::size_t>(n));
    for (auto& x : v) x = nd(rng);
    ggml_quantize_row(t, v.data(), n, out.data());
    return out;
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : out) b = static_cast<std::byte>(byte(rng));
  const float top = max_abs / ggml_code_range(t);
  std::uniform_real_distribution<float> scale(0.03f * top, top);
  const auto bb = static_cast<std::size_t>(ggml_block_bytes(t));
  for (std::size_t b = 0; b < out.size(); b += bb) {
    for (int off : ggml_scale_offsets(t)) {
      const uint16_t h = f32_to_f16(scale(rng));
      std::memcpy(out.data() + b + off, &h, 2);
    }
    if (t == GgmlType::IQ1_M) {  // d's f16 bits: the top nibbles of the 4 scale words at 48
      const uint16_t h = f32_to_f16(scale(rng));
      for (int k = 0; k < 4; ++k) {
        auto& top = reinterpret_cast<uint8_t&>(out[b + 48 + 2 * k + 1]);
        top = static_cast<uint8_t>((top & 0x0f) | ((h >> (4 * k)) & 15) << 4);
      }
    }
    if (t == GgmlType::MXFP4)  // the E8M0 byte: 2^(e - 128) is the scale
      out[b] = static_cast<std::byte>(128 + std::lround(std::log2(scale(rng))));
  }
  return out;
}

inline constexpr GgmlType kAllGgmlTypes[] = {
    GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
    GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K,
    GgmlType::Q6_K, GgmlType::IQ4_NL, GgmlType::IQ4_XS,
    // read, not written (gguf_quant.h)
    GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S, GgmlType::IQ3_XXS, GgmlType::IQ3_S,
    GgmlType::IQ1_S, GgmlType::IQ1_M, GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::MXFP4};

}  // namespace lora::test
