// MLX affine quantization: bit layouts worked out by hand, the quantizer's edge rule, error bounds.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "autograd/quant.h"

namespace lora {
namespace {

std::vector<uint8_t> repeat(std::vector<uint8_t> pattern, int times) {
  std::vector<uint8_t> out;
  for (int i = 0; i < times; ++i) out.insert(out.end(), pattern.begin(), pattern.end());
  return out;
}

TEST(QuantPack, TwoBitsSixteenPerWord) {
  // 0,1,2,3 -> 00 01 10 11 from the low end: 0b11'10'01'00 = 0xE4 per byte.
  auto words = pack_bits(repeat({0, 1, 2, 3}, 4), 2);
  ASSERT_EQ(words.size(), 1u);
  EXPECT_EQ(words[0], 0xE4E4E4E4u);
}

TEST(QuantPack, FourBitsElementZeroInLowNibble) {
  auto words = pack_bits(std::vector<uint8_t>{1, 2, 3, 4, 5, 6, 7, 8}, 4);
  ASSERT_EQ(words.size(), 1u);
  EXPECT_EQ(words[0], 0x87654321u);
}

TEST(QuantPack, EightBitsLittleEndianBytes) {
  auto words = pack_bits(std::vector<uint8_t>{0x12, 0x34, 0x56, 0x78, 0xff, 0, 0, 1}, 8);
  ASSERT_EQ(words.size(), 2u);
  EXPECT_EQ(words[0], 0x78563412u);
  EXPECT_EQ(words[1], 0x010000ffu);
}

TEST(QuantPack, ThreeBitsEightValuesInThreeBytes) {
  // 0..7 as a 3-bit stream: sum v_i << 3i = 0xFAC688 -> bytes 88 C6 FA, repeated 4 times over
  // 12 bytes = 3 words (little-endian).
  std::vector<uint8_t> ramp(8);
  std::iota(ramp.begin(), ramp.end(), 0);
  auto words = pack_bits(repeat(ramp, 4), 3);
  ASSERT_EQ(words.size(), 3u);
  EXPECT_EQ(words[0], 0x88FAC688u);
  EXPECT_EQ(words[1], 0xC688FAC6u);
  EXPECT_EQ(words[2], 0xFAC688FAu);
  // Element 10 occupies bits 30..32: it straddles the first two words.
  std::vector<uint8_t> one(32, 0);
  one[10] = 7;
  words = pack_bits(one, 3);
  EXPECT_EQ(words[0], 0xC0000000u);
  EXPECT_EQ(words[1], 0x1u);
  EXPECT_EQ(words[2], 0x0u);
}

TEST(QuantPack, FiveBitsEightValuesInFiveBytes) {
  // element 0 = 1 (bit 0), element 1 = 2 (bit 6), element 6 = 31 at bits 30..34.
  std::vector<uint8_t> v(32, 0);
  v[0] = 1;
  v[1] = 2;
  v[6] = 31;
  auto words = pack_bits(v, 5);
  ASSERT_EQ(words.size(), 5u);
  EXPECT_EQ(words[0], 0xC0000041u);
  EXPECT_EQ(words[1], 0x7u);
  for (int i = 2; i < 5; ++i) EXPECT_EQ(words[i], 0u);
  // Eight values fill exactly five bytes: 8 x 31 = forty one-bits.
  auto full = pack_bits(std::vector<uint8_t>(8, 31), 5);
  ASSERT_EQ(full.size(), 2u);
  EXPECT_EQ(full[0], 0xFFFFFFFFu);
  EXPECT_EQ(full[1], 0xFFu);
}

TEST(QuantPack, SixBitsFourValuesInThreeBytes) {
  // 1 | 2 << 6 | 3 << 12 | 4 << 18 = 0x103081.
  auto words = pack_bits(std::vector<uint8_t>{1, 2, 3, 4}, 6);
  ASSERT_EQ(words.size(), 1u);
  EXPECT_EQ(words[0], 0x103081u);
  // Element 5 (bits 30..35) = 45 = 0b101101: bits 30,31 get 1,0; the next word's low 4 bits 0b1011.
  std::vector<uint8_t> v(16, 0);
  v[0] = 63;
  v[5] = 45;
  words = pack_bits(v, 6);
  ASSERT_EQ(words.size(), 3u);
  EXPECT_EQ(words[0], 0x4000003Fu);
  EXPECT_EQ(words[1], 0xBu);
}

TEST(QuantPack, UnpackInvertsPackForEveryWidth) {
  std::mt19937 rng(7);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    std::vector<uint8_t> v(256);
    for (auto& x : v) x = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
    auto words = pack_bits(v, bits);
    EXPECT_EQ(words.size(), 256u * bits / 32);
    EXPECT_EQ(unpack_bits(words, 256, bits), v) << bits << " bits";
  }
  EXPECT_THROW(pack_bits(std::vector<uint8_t>{16}, 4), std::invalid_argument);
  EXPECT_THROW(pack_bits(std::vector<uint8_t>{1}, 7), std::invalid_argument);
}

// A 32-wide group whose larger-magnitude endpoint is the max: the scale is negative and the max
// sits exactly at q = 0.
TEST(QuantRule, EdgeIsMaxGivesNegativeScale) {
  std::vector<float> w(32, 0.0f);
  w[0] = 2.0f;
  w[1] = -1.0f;
  w[2] = 1.0f;
  auto q = quantize(w, 1, 32, 4, 32);
  // scale = -(3/15) = -0.2; q0 = rint(2 / -0.2) = -10; scale = 2 / -10; bias = 2.
  EXPECT_FLOAT_EQ(q.scales[0], 2.0f / -10.0f);
  EXPECT_LT(q.scales[0], 0.0f);
  EXPECT_EQ(q.biases[0], 2.0f);
  auto codes = unpack_bits(q.packed, 32, 4);
  EXPECT_EQ(codes[0], 0);   // the edge
  EXPECT_EQ(codes[1], 15);  // -1 = 2 - 0.2 * 15
  EXPECT_EQ(codes[2], 5);   // 1 = 2 - 0.2 * 5
  EXPECT_EQ(codes[3], 10);  // 0 = 2 - 0.2 * 10
  auto back = dequantize(q);
  EXPECT_EQ(back[0], 2.0f);
  EXPECT_NEAR(back[1], -1.0f, 1e-6);
  EXPECT_NEAR(back[3], 0.0f, 1e-6);
}

TEST(QuantRule, EdgeIsMinGivesPositiveScale) {
  std::vector<float> w(32, 0.5f);
  w[7] = -2.0f;
  w[9] = 1.0f;
  auto q = quantize(w, 1, 32, 4, 32);
  EXPECT_GT(q.scales[0], 0.0f);
  EXPECT_EQ(q.biases[0], -2.0f);
  auto codes = unpack_bits(q.packed, 32, 4);
  EXPECT_EQ(codes[7], 0);
  EXPECT_EQ(codes[9], 15);
  EXPECT_EQ(dequantize(q)[7], -2.0f);
}

TEST(QuantRule, AllZeroGroupIsExactZero) {
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    std::vector<float> w(2 * 64, 0.0f);
    for (int i = 64; i < 128; ++i) w[i] = 0.01f * float(i - 90);  // second row nonzero
    auto q = quantize(w, 2, 64, bits, 64);
    auto back = dequantize(q);
    for (int i = 0; i < 64; ++i) ASSERT_EQ(back[i], 0.0f) << bits << " bits, element " << i;
    EXPECT_EQ(q.biases[0], 0.0f);
  }
}

TEST(QuantRule, ConstantGroupRoundTripsExactly) {
  std::vector<float> w(64, -0.375f);
  auto back = dequantize(quantize(w, 1, 64, 4, 64));
  for (float v : back) EXPECT_EQ(v, -0.375f);
}

TEST(QuantRule, ScalesAndBiasesAreRoundedToTheirDtype) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  std::vector<float> w(4 * 128);
  for (auto& x : w) x = nd(rng);
  for (DType t : {DType::F16, DType::BF16}) {
    auto q = quantize(w, 4, 128, 4, 64, t);
    EXPECT_EQ(q.scale_dtype, t);
    for (std::size_t i = 0; i < q.scales.size(); ++i) {
      float s = q.scales[i], b = q.biases[i];
      if (t == DType::F16) {
        EXPECT_EQ(f16_to_f32(f32_to_f16(s)), s);
        EXPECT_EQ(f16_to_f32(f32_to_f16(b)), b);
      } else {
        EXPECT_EQ(bf16_to_f32(f32_to_bf16(s)), s);
        EXPECT_EQ(bf16_to_f32(f32_to_bf16(b)), b);
      }
    }
  }
  EXPECT_THROW(quantize(w, 4, 128, 4, 64, DType::I32), std::invalid_argument);
}

// Every element lands within one step of the grid (the q0 adjustment can shrink the grid by at
// most one step at the far end), and the RMS error is near a uniform rounding error's
// step/sqrt(12).
TEST(QuantRule, RoundTripErrorIsBoundedForEveryWidthAndGroup) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  const int64_t rows = 8, cols = 256;
  std::vector<float> w(rows * cols);
  for (auto& x : w) x = nd(rng);
  for (int bits : {2, 3, 4, 5, 6, 8}) {
    for (int gs : {32, 64, 128}) {
      auto q = quantize(w, rows, cols, bits, gs);
      ASSERT_EQ(static_cast<int64_t>(q.packed.size()), rows * cols * bits / 32);
      ASSERT_EQ(static_cast<int64_t>(q.scales.size()), rows * cols / gs);
      auto back = dequantize(q);
      double sq = 0, step_sum = 0;
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          float step = std::fabs(q.scales[r * (cols / gs) + c / gs]);
          float err = std::fabs(back[r * cols + c] - w[r * cols + c]);
          ASSERT_LE(err, step * 1.001f + 1e-7f) << bits << " bits, group " << gs;
          sq += double(err) * err;
          step_sum += step;
        }
      }
      double rms = std::sqrt(sq / double(rows * cols));
      double mean_step = step_sum / double(rows * cols);
      EXPECT_LT(rms, 0.40 * mean_step) << bits << " bits, group " << gs;
    }
  }
}

TEST(QuantRule, DequantizeRowsMatchesWholeMatrix) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
  std::vector<float> w(6 * 96);
  for (auto& x : w) x = ud(rng);
  for (int bits : {3, 4, 5, 6}) {
    auto q = quantize(w, 6, 96, bits, 32);
    auto all = dequantize(q);
    std::vector<float> part(2 * 96);
    dequantize_rows(q, 3, 5, part.data());
    for (int i = 0; i < 2 * 96; ++i) ASSERT_EQ(part[i], all[3 * 96 + i]);
  }
}

TEST(QuantRule, InputNotMultipleOfGroupIsNotQuantizable) {
  EXPECT_FALSE(quantizable(172, 4, 64));  // stories260K's down_proj stays float
  EXPECT_FALSE(quantizable(172, 4, 32));
  EXPECT_TRUE(quantizable(64, 4, 64));
  EXPECT_TRUE(quantizable(96, 3, 32));
  EXPECT_FALSE(quantizable(64, 7, 64));
  EXPECT_FALSE(quantizable(64, 4, 16));
  std::vector<float> w(172, 1.0f);
  EXPECT_THROW(quantize(w, 1, 172, 4, 64), std::invalid_argument);
  EXPECT_THROW(quantize(w, 2, 86, 4, 64), std::invalid_argument);
  std::vector<float> short_w(10);
  EXPECT_THROW(quantize(short_w, 1, 64, 4, 64), std::invalid_argument);
}

}  // namespace
}  // namespace lora
