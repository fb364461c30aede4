#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "autograd/dtype.h"

namespace lora {

TEST(DType, NamesRoundTrip) {
  for (auto name : {"F32", "F16", "BF16", "F64", "I8", "U8", "I16", "I32", "U32", "I64", "BOOL"}) {
    auto t = dtype_from_name(name);
    ASSERT_TRUE(t.has_value()) << name;
    EXPECT_EQ(dtype_name(*t), name);
  }
  EXPECT_FALSE(dtype_from_name("F8_E4M3").has_value());
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
}

TEST(DType, HalfConversionsAreExactOnEveryHalf) {
  // Every f16 and bf16 bit pattern widens to f32 and narrows back to itself (NaNs stay NaN).
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(f))));
      continue;
    }
    ASSERT_EQ(f32_to_f16(f), h) << "f16 " << h;
    float b = bf16_to_f32(uint16_t(h));
    if (!std::isnan(b)) {
      ASSERT_EQ(f32_to_bf16(b), h) << "bf16 " << h;
    }
  }
}

TEST(DType, RoundsToNearestEven) {
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048), f32_to_f16(1.0f));       // tie, even stays
  EXPECT_EQ(f32_to_f16(1.0f + 3.0f / 2048), uint16_t(0x3c02));       // tie, rounds up to even
  EXPECT_EQ(f32_to_bf16(1.0f + 1.0f / 256), f32_to_bf16(1.0f));      // tie to even
  EXPECT_EQ(f32_to_f16(1e6f), uint16_t(0x7c00));                     // overflow to inf
  EXPECT_EQ(f16_to_f32(0x0001), std::ldexp(1.0f, -24));              // smallest subnormal
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25) * 1.5f), uint16_t(1));  // rounds into subnormal
}

}  // namespace lora
