// ggml block types: hand-made blocks decoded by hand, the run-time-dispatched kernels against the
// scalar reference, the 32-element quantizers' rounding, and the frozen products and gradients
// through every type (by finite differences, and by torch autograd on the dequantized matrix).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>

#include "autograd/frozen_weight.h"
#include "autograd/gguf_quant.h"
#include "autograd/ops.h"
#include "gguf_test_util.h"
#include "gradcheck_util.h"
#include "support/test_support.h"
#include "trainer/io/safetensors.h"

namespace lora {
namespace {

using test::kAllGgmlTypes;
using test::random_ggml_bytes;

struct Block {
  explicit Block(GgmlType t) : type(t), bytes(static_cast<std::size_t>(ggml_block_bytes(t))) {}
  void f16(int offset, float v) {
    const uint16_t h = f32_to_f16(v);
    std::memcpy(bytes.data() + offset, &h, 2);
  }
  void u8(int offset, uint8_t v) { bytes[static_cast<std::size_t>(offset)] = std::byte{v}; }
  // Decoded by both the kernel and the reference; they must agree on every element.
  std::vector<float> decode() const {
    const int64_t n = ggml_block_elems(type);
    std::vector<float> fast(n), ref(n);
    ggml_dequantize_row(type, bytes.data(), n, fast.data());
    ggml_dequantize_row_reference(type, bytes.data(), n, ref.data());
    EXPECT_EQ(fast, ref) << ggml_type_name(type);
    return fast;
  }
  GgmlType type;
  std::vector<std::byte> bytes;
};

TEST(GgmlTypes, SizesAndNames) {
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q4_K, 512), 288u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q8_0, 64), 68u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::Q6_K, 256), 210u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::BF16, 3), 6u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::IQ4_NL, 64), 36u);
  EXPECT_EQ(ggml_row_bytes(GgmlType::IQ4_XS, 512), 272u);
  EXPECT_EQ(ggml_type_from_id(20), GgmlType::IQ4_NL);
  EXPECT_EQ(ggml_type_named("iq4_xs"), GgmlType::IQ4_XS);
  EXPECT_THROW(ggml_row_bytes(GgmlType::Q4_K, 128), std::invalid_argument);
  EXPECT_EQ(ggml_type_named("q5_k"), GgmlType::Q5_K);
  // The read-only types' blocks, as the format's structs lay them out.
  const std::pair<GgmlType, uint64_t> read_only[] = {
      {GgmlType::IQ2_XXS, 66}, {GgmlType::IQ2_XS, 74}, {GgmlType::IQ2_S, 82},
      {GgmlType::IQ3_XXS, 98}, {GgmlType::IQ3_S, 110}, {GgmlType::IQ1_S, 50},
      {GgmlType::IQ1_M, 56},   {GgmlType::TQ1_0, 54},  {GgmlType::TQ2_0, 66}};
  for (const auto& [t, bytes] : read_only) {
    EXPECT_EQ(ggml_row_bytes(t, 256), bytes) << ggml_type_name(t);
    EXPECT_FALSE(ggml_type_writable(t)) << ggml_type_name(t);
  }
  EXPECT_EQ(ggml_row_bytes(GgmlType::MXFP4, 64), 34u);
  EXPECT_EQ(ggml_type_named("iq2_xxs"), GgmlType::IQ2_XXS);
  EXPECT_EQ(ggml_type_from_id(39), GgmlType::MXFP4);
  EXPECT_TRUE(ggml_type_writable(GgmlType::IQ4_XS));
  std::vector<float> row(256);
  std::vector<std::byte> out(66);
  EXPECT_THROW(ggml_quantize_row(GgmlType::IQ2_XXS, row.data(), 256, out.data()),
               std::invalid_argument);
  EXPECT_EQ(ggml_type_from_id(9), std::nullopt);   // Q8_1 is not read
  EXPECT_EQ(ggml_type_from_id(40), std::nullopt);  // nor NVFP4
  EXPECT_EQ(ggml_type_id_name(16), "IQ2_XXS");
  EXPECT_EQ(ggml_type_id_name(999), "type 999");
  const auto isa = ggml_kernel_isa();
  EXPECT_TRUE(isa == "avx512" || isa == "avx2" || isa == "scalar") << isa;
}

// Read-only types, one element each worked by hand from the layouts.
TEST(GgmlTypes, HandMadeReadOnlyBlocks) {
  // IQ2_XXS group 0: entry 0 (eight 8s); signs word 1 -> value 0 negative and, for an even count,
  // value 7; scale nibble 1 -> d (1 + 1/2) / 4.
  Block iq2(GgmlType::IQ2_XXS);
  iq2.f16(0, 2.0f);
  iq2.u8(6, 1);     // the word at 6: 7 sign bits of entry 0 = 1
  iq2.u8(9, 0x10);  // its top nibble: scale 1
  auto y = iq2.decode();
  EXPECT_EQ(y[0], -2.0f * 1.5f * 0.25f * 8);
  EXPECT_EQ(y[1], 2.0f * 1.5f * 0.25f * 8);
  EXPECT_EQ(y[7], -2.0f * 1.5f * 0.25f * 8);
  EXPECT_EQ(y[8], 2.0f * 1.5f * 0.25f * 8);  // the second entry (grid entry 0 too), no signs
  // TQ2_0: codes 0, 1, 2 are -1, 0, 1 times d; element 32 is byte 0's bits 2-3.
  Block tq2(GgmlType::TQ2_0);
  tq2.f16(64, 0.5f);
  tq2.u8(0, 0b1000);  // element 0: code 0, element 32: code 2
  y = tq2.decode();
  EXPECT_EQ(y[0], -0.5f);
  EXPECT_EQ(y[32], 0.5f);
  EXPECT_EQ(y[1], -0.5f);
  // TQ1_0: trit n of byte q is 3 (q 3^n mod 256) / 256, less 1. q = 162: n = 0 gives 486 / 256
  // = 1 (the value 0); n = 1 gives 3 x (486 mod 256 = 230) / 256 = 2 (the value 1), element 32.
  Block tq1(GgmlType::TQ1_0);
  tq1.f16(52, 4.0f);
  tq1.u8(0, 162);
  y = tq1.decode();
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[32], 4.0f);
  // MXFP4: e = 130 -> 2^(130 - 128) = 4; code 7 is 12 (a doubled 6), code 9 is -1.
  Block mx(GgmlType::MXFP4);
  mx.u8(0, 130);
  mx.u8(1, 0x97);
  y = mx.decode();
  EXPECT_EQ(y[0], 48.0f);
  EXPECT_EQ(y[16], -4.0f);
}

TEST(GgmlTypes, HandMadeLegacyBlocks) {
  Block q8(GgmlType::Q8_0);
  q8.f16(0, 0.5f);
  q8.u8(2, 0xFD);  // -3
  q8.u8(33, 127);
  auto y = q8.decode();
  EXPECT_EQ(y[0], -1.5f);
  EXPECT_EQ(y[31], 63.5f);
  EXPECT_EQ(y[5], 0.0f);

  Block q40(GgmlType::Q4_0);
  q40.f16(0, 2.0f);
  q40.u8(2, 0x3A);  // element 0: 0xA, element 16: 0x3
  y = q40.decode();
  EXPECT_EQ(y[0], 4.0f);
  EXPECT_EQ(y[16], -10.0f);
  EXPECT_EQ(y[1], -16.0f);

  Block q41(GgmlType::Q4_1);
  q41.f16(0, 0.5f);
  q41.f16(2, -1.0f);
  q41.u8(5, 0xF0);  // byte 1: element 1 = 0, element 17 = 15
  y = q41.decode();
  EXPECT_EQ(y[1], -1.0f);
  EXPECT_EQ(y[17], 6.5f);

  Block q50(GgmlType::Q5_0);
  q50.f16(0, 1.0f);
  q50.u8(2, 0x04);  // qh bit 2
  q50.u8(4, 0x04);  // qh bit 18
  q50.u8(8, 0x21);  // byte 2: element 2 low 1, element 18 low 2
  y = q50.decode();
  EXPECT_EQ(y[2], 1.0f);
  EXPECT_EQ(y[18], 2.0f);
  EXPECT_EQ(y[3], -16.0f);

  Block q51(GgmlType::Q5_1);
  q51.f16(0, 1.0f);
  q51.f16(2, 0.5f);
  q51.u8(4, 0x01);  // qh bit 0
  q51.u8(8, 0x07);
  y = q51.decode();
  EXPECT_EQ(y[0], 23.5f);
  EXPECT_EQ(y[16], 0.5f);
}

TEST(GgmlTypes, HandMadeKQuantBlocks) {
  Block q2(GgmlType::Q2_K);
  q2.f16(80, 1.0f);
  q2.f16(82, 0.5f);
  q2.u8(0, 0x23);   // sub-block 0: scale 3, min 2
  q2.u8(2, 0x11);   // sub-block 2: scale 1, min 1
  q2.u8(6, 0x04);   // sub-block 6: scale 4, min 0
  q2.u8(16, 0xE4);  // codes 0, 1, 2, 3 at shifts 0, 2, 4, 6
  auto y = q2.decode();
  EXPECT_EQ(y[0], -1.0f);
  EXPECT_EQ(y[32], 0.5f);
  EXPECT_EQ(y[96], 12.0f);

  Block q3(GgmlType::Q3_K);
  q3.f16(108, 1.0f);
  q3.u8(96, 0x01);   // scale 0: low nibble 1
  q3.u8(104, 0x02);  // scale 0: high bits 2 -> 33 - 32 = 1; scale 1: 0 - 32
  q3.u8(0, 0x01);    // hmask[0] bit 0: element 0 has no -4
  q3.u8(16, 0x01);   // hmask[16] bit 0: element 16 neither
  q3.u8(32, 0x03);
  q3.u8(33, 0x01);
  q3.u8(48, 0x02);
  y = q3.decode();
  EXPECT_EQ(y[0], 3.0f);
  EXPECT_EQ(y[1], -3.0f);
  EXPECT_EQ(y[16], -64.0f);

  Block q4(GgmlType::Q4_K);
  q4.f16(0, 1.0f);
  q4.f16(2, 0.5f);
  q4.u8(4, 0x43);   // sub 0 scale 3; its top bits feed sub 4's scale (+16)
  q4.u8(8, 0x02);   // sub 0 min 2
  q4.u8(12, 0x05);  // sub 4 scale low nibble 5 -> 21, min 0
  q4.u8(16, 0x95);
  q4.u8(80, 0x07);
  y = q4.decode();
  EXPECT_EQ(y[0], 14.0f);
  EXPECT_EQ(y[32], 0.0f);
  EXPECT_EQ(y[128], 147.0f);

  Block q5(GgmlType::Q5_K);
  q5.f16(0, 1.0f);
  q5.u8(4, 0x01);   // sub 0 scale 1
  q5.u8(5, 0x02);   // sub 1 scale 2
  q5.u8(16, 0x03);  // qh[0]: fifth bit for sub 0 and sub 1
  q5.u8(48, 0x32);
  y = q5.decode();
  EXPECT_EQ(y[0], 18.0f);
  EXPECT_EQ(y[32], 38.0f);

  Block q6(GgmlType::Q6_K);
  q6.f16(208, 0.5f);
  q6.u8(192, 2);
  q6.u8(194, 0xFF);  // -1
  q6.u8(196, 1);
  q6.u8(0, 0x21);
  q6.u8(128, 0x06);
  y = q6.decode();
  EXPECT_EQ(y[0], 1.0f);
  EXPECT_EQ(y[32], 8.0f);
  EXPECT_EQ(y[64], -15.0f);
}

// IQ4_NL: code c stands for kIq4Values[c] steps; IQ4_XS: sub-block s's step is d * (l - 32), l's
// low nibble in scales_l and high two bits in scales_h.
TEST(GgmlTypes, HandMadeIq4Blocks) {
  Block nl(GgmlType::IQ4_NL);
  nl.f16(0, 0.5f);
  nl.u8(2, 0xF0);  // element 0: code 0 (-127), element 16: code 15 (113)
  nl.u8(3, 0x08);  // element 1: code 8 (1), element 17: code 0 (-127)
  auto y = nl.decode();
  EXPECT_EQ(y[0], -63.5f);
  EXPECT_EQ(y[16], 56.5f);
  EXPECT_EQ(y[1], 0.5f);
  EXPECT_EQ(y[17], -63.5f);

  Block xs(GgmlType::IQ4_XS);
  xs.f16(0, 0.25f);
  xs.u8(2, 0x80);       // scales_h: sub-block 3's high bits 2 (l += 32)
  xs.u8(4, 0x1F);       // scales_l: sub-block 0 l = 15, sub-block 1 l = 1
  xs.u8(5, 0x20);       // sub-block 2 l = 0, sub-block 3 l = 2 + 32
  xs.u8(8, 0x9F);       // sub-block 0: element 0 code 15 (113), element 16 code 9 (13)
  xs.u8(8 + 16, 0x07);  // sub-block 1: element 32 code 7 (-10)
  xs.u8(8 + 48, 0x0E);  // sub-block 3: element 96 code 14 (89)
  y = xs.decode();
  EXPECT_EQ(y[0], 0.25f * -17 * 113);
  EXPECT_EQ(y[16], 0.25f * -17 * 13);
  EXPECT_EQ(y[32], 0.25f * -31 * -10);
  EXPECT_EQ(y[64], 0.25f * -32 * -127);  // sub-block 2: code 0, l - 32 = -32
  EXPECT_EQ(y[96], 0.25f * 2 * 89);
}

TEST(GgmlTypes, KernelsMatchTheScalarReferenceOnRandomBlocks) {
  for (GgmlType t : kAllGgmlTypes) {
    const int64_t cols = 512;
    const auto bytes = random_ggml_bytes(t, 3, cols, 7);
    std::vector<float> fast(3 * cols), ref(3 * cols);
    const GgmlMatrix m = GgmlMatrix::owning(3, cols, t, bytes);
    m.rows_f32(0, 3, fast.data());
    for (int r = 0; r < 3; ++r)
      ggml_dequantize_row_reference(t, bytes.data() + r * m.row_bytes(), cols,
                                    ref.data() + r * cols);
    EXPECT_EQ(fast, ref) << ggml_type_name(t);
    for (float v : fast) ASSERT_TRUE(std::isfinite(v)) << ggml_type_name(t);
  }
}

TEST(GgmlTypes, QuantizersRoundToTheNearestCode) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(256);
  for (auto& v : x) v = nd(rng);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                     GgmlType::F16, GgmlType::BF16}) {
    std::vector<std::byte> q(ggml_row_bytes(t, 256));
    ggml_quantize_row(t, x.data(), 256, q.data());
    std::vector<float> y(256);
    ggml_dequantize_row(t, q.data(), 256, y.data());
    // Half a step of the coarsest grid: range / levels, plus the f16 rounding of the scale.
    const int levels = t == GgmlType::Q8_0                            ? 254
                       : (t == GgmlType::Q4_0 || t == GgmlType::Q4_1) ? 15
                                                                      : 31;
    for (int b = 0; b < 8; ++b) {
      float lo = x[32 * b], hi = x[32 * b];
      for (int j = 0; j < 32; ++j) {
        lo = std::min(lo, x[32 * b + j]);
        hi = std::max(hi, x[32 * b + j]);
      }
      // The signed-max types place the range's far end at the grid's end: step <= 2 amax / levels.
      const float amax = std::max(-lo, hi);
      const float step =
          (t == GgmlType::Q4_1 || t == GgmlType::Q5_1) ? (hi - lo) / levels : 2 * amax / levels;
      // Q4_0/Q5_0 clamp the code at the range's other end, a whole step off at worst.
      const bool clamps = t == GgmlType::Q4_0 || t == GgmlType::Q5_0;
      const float tol = t == GgmlType::F16 || t == GgmlType::BF16
                            ? 0.01f
                            : step * (clamps ? 1.0f : 0.5f) + 2e-3f * amax;
      for (int j = 0; j < 32; ++j)
        ASSERT_LE(std::abs(y[32 * b + j] - x[32 * b + j]), tol)
            << ggml_type_name(t) << " " << b << "," << j;
    }
  }
  // Every type is written, but only in whole blocks: 128 values are half a Q3_K block.
  std::vector<std::byte> scratch(ggml_row_bytes(GgmlType::Q3_K, 256));
  EXPECT_THROW(ggml_quantize_row(GgmlType::Q3_K, x.data(), 128, scratch.data()),
               std::invalid_argument);
}

// The K-quant encoders: decoded, every value is within a step of its sub-block's grid, and the
// error over N(0, 1) data is what rounding to that grid gives (measured: 0.074, 0.036, 0.018 for
// Q4_K, Q5_K, Q6_K).
TEST(GgmlTypes, KQuantEncodersFitEachSubBlock) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(1024);
  for (auto& v : x) v = nd(rng);
  x[7] = 0.0f;  // an all-zero sub-block must stay zero
  std::fill(x.begin() + 512, x.begin() + 544, 0.0f);
  const std::pair<GgmlType, double> bounds[] = {
      {GgmlType::Q4_K, 0.10}, {GgmlType::Q5_K, 0.05}, {GgmlType::Q6_K, 0.025}};
  for (const auto& [t, bound] : bounds) {
    std::vector<std::byte> q(ggml_row_bytes(t, 1024));
    ggml_quantize_row(t, x.data(), 1024, q.data());
    std::vector<float> y(1024), ref(1024);
    ggml_dequantize_row(t, q.data(), 1024, y.data());
    ggml_dequantize_row_reference(t, q.data(), 1024, ref.data());
    EXPECT_EQ(y, ref);
    double sq = 0;
    for (int i = 0; i < 1024; ++i) sq += double(y[i] - x[i]) * (y[i] - x[i]);
    const double rms = std::sqrt(sq / 1024);
    EXPECT_LT(rms, bound) << ggml_type_name(t);
    RecordProperty(std::string(ggml_type_name(t)) + "_rms_error", std::to_string(rms));
    EXPECT_GT(rms, bound / 10) << ggml_type_name(t) << ": suspiciously exact";
    for (int i = 512; i < 544; ++i) EXPECT_EQ(y[i], 0.0f) << ggml_type_name(t);
  }
}

TEST(GgmlTypes, FrozenProductsMatchTheDequantizedMatrix) {
  const int64_t rows = 70, cols = 256, n = 3;
  const auto x = test::to_float(test::random_values(n * cols, 1));
  const auto g = test::to_float(test::random_values(n * rows, 2));
  for (GgmlType t : kAllGgmlTypes) {
    const FrozenWeight fw = FrozenWeight::from_ggml(
        GgmlMatrix::owning(rows, cols, t, random_ggml_bytes(t, rows, cols, 5)));
    EXPECT_EQ(fw.stored_bytes(), ggml_row_bytes(t, cols) * rows);
    const auto w = fw.to_f32();
    std::vector<float> y(n * rows), dx(n * cols);
    frozen_matmul(fw, x.data(), n, y.data());
    frozen_matmul_input_grad(fw, g.data(), n, dx.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t r = 0; r < rows; ++r) {
        double want = 0;
        for (int64_t c = 0; c < cols; ++c) want += double(x[i * cols + c]) * w[r * cols + c];
        ASSERT_NEAR(y[i * rows + r], want, 1e-4 * (1 + std::abs(want))) << ggml_type_name(t);
      }
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < cols; ++c) {
        double want = 0;
        for (int64_t r = 0; r < rows; ++r) want += double(g[i * rows + r]) * w[r * cols + c];
        ASSERT_NEAR(dx[i * cols + c], want, 1e-4 * (1 + std::abs(want))) << ggml_type_name(t);
      }
  }
}

// y = x W^T + s (x A^T) B^T, loss = sum(y * r): gradients for x, A and B by central differences
// (exact up to rounding: the loss is linear in each), W the dequantized matrix.
TEST(GgmlTypes, LinearGradientsThroughEveryType) {
  const int64_t n = 2, in = 256, out = 5, rank = 2;
  const float s = 0.8f;
  const auto x = test::random_values(n * in, 11), a = test::random_values(rank * in, 12),
             b = test::random_values(out * rank, 13), r = test::random_values(n * out, 14);
  for (GgmlType t : kAllGgmlTypes) {
    const FrozenWeight fw =
        FrozenWeight::from_ggml(GgmlMatrix::owning(out, in, t, random_ggml_bytes(t, out, in, 9)));
    const auto w = fw.to_f32();
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& A,
                    const std::vector<double>& B) {
      double total = 0;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t o = 0; o < out; ++o) {
          double y = 0;
          for (int64_t j = 0; j < in; ++j) y += xs[i * in + j] * w[o * in + j];
          for (int64_t k = 0; k < rank; ++k) {
            double u = 0;
            for (int64_t j = 0; j < in; ++j) u += xs[i * in + j] * A[k * in + j];
            y += s * u * B[o * rank + k];
          }
          total += y * r[i * out + o];
        }
      return total;
    };
    ag::Parameter A{Tensor({rank, in}, test::to_float(a)), {}},
        B{Tensor({out, rank}, test::to_float(b)), {}};
    const std::vector<ag::LoraBranch> branches = {{&A, &B, s, 0.0f, 0, true}};
    ag::Tape tape;
    ag::Var xv = tape.make(Tensor({n, in}, test::to_float(x)), true);
    ag::Var y = ag::linear(tape, xv, fw, nullptr, branches);
    tape.backward_from(y, Tensor(y->value.shape, test::to_float(r)));
    const double h = 0.5;
    constexpr double kTol = 1e-4;
    EXPECT_LT(test::max_rel_error(xv->grad.data,
                                  test::numeric_grad([&](auto& v) { return loss(v, a, b); }, x, h)),
              kTol)
        << ggml_type_name(t);
    EXPECT_LT(test::max_rel_error(A.grad.data,
                                  test::numeric_grad([&](auto& v) { return loss(x, v, b); }, a, h)),
              kTol)
        << ggml_type_name(t);
    EXPECT_LT(test::max_rel_error(B.grad.data,
                                  test::numeric_grad([&](auto& v) { return loss(x, a, v); }, b, h)),
              kTol)
        << ggml_type_name(t);
  }
}

// The same linear with a LoRA branch, every type: our products and gradients through the stored
// blocks against torch autograd (scripts/torch_linear_grad.py, float64) on the matrix our
// dequantization gives. Rows of two 256-element blocks, so the K-quants hold whole super-blocks.
TEST(GgmlTypes, LinearGradientsMatchTorchOnTheDequantizedMatrix) {
  LORA_REQUIRE_TORCH();
  const int64_t n = 3, in = 512, out = 7, rank = 3;
  const float s = 0.6f;
  const auto x = test::to_float(test::random_values(n * in, 21)),
             a = test::to_float(test::random_values(rank * in, 22)),
             b = test::to_float(test::random_values(out * rank, 23)),
             r = test::to_float(test::random_values(n * out, 24));
  test::TempDir tmp("torch-linear");
  std::vector<std::string> argv = {test::torch_python(),
                                   std::string(LORA_SOURCE_DIR) + "/scripts/torch_linear_grad.py"};
  std::map<GgmlType, std::map<std::string, std::vector<float>>> ours;
  for (GgmlType t : kAllGgmlTypes) {
    const FrozenWeight fw =
        FrozenWeight::from_ggml(GgmlMatrix::owning(out, in, t, random_ggml_bytes(t, out, in, 19)));
    ag::Parameter A{Tensor({rank, in}, a), {}}, B{Tensor({out, rank}, b), {}};
    const std::vector<ag::LoraBranch> branches = {{&A, &B, s, 0.0f, 0, true}};
    ag::Tape tape;
    ag::Var xv = tape.make(Tensor({n, in}, x), true);
    ag::Var y = ag::linear(tape, xv, fw, nullptr, branches);
    tape.backward_from(y, Tensor(y->value.shape, r));
    ours[t] = {{"y", y->value.data},
               {"grad.x", xv->grad.data},
               {"grad.A", A.grad.data},
               {"grad.B", B.grad.data}};
    const std::string name(ggml_type_name(t));
    write_safetensors(
        tmp / (name + ".in.safetensors"),
        {TensorData::from_f32("W", {out, in}, fw.to_f32()), TensorData::from_f32("x", {n, in}, x),
         TensorData::from_f32("A", {rank, in}, a), TensorData::from_f32("B", {out, rank}, b),
         TensorData::from_f32("upstream", {n, out}, r)},
        {{"scale", "0.6"}});
    argv.push_back((tmp / (name + ".in.safetensors")).string());
    argv.push_back((tmp / (name + ".out.safetensors")).string());
  }
  const auto res = test::run_program(argv);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  for (const auto& [t, mine] : ours) {
    const auto torch =
        SafetensorsFile::open(tmp / (std::string(ggml_type_name(t)) + ".out.safetensors"));
    for (const auto& [key, got] : mine) {
      const std::vector<float> want = torch.read_f32(key);
      ASSERT_EQ(want.size(), got.size()) << ggml_type_name(t) << " " << key;
      EXPECT_GT(*std::max_element(want.begin(), want.end()), 0.0f) << ggml_type_name(t) << key;
      EXPECT_LT(test::max_rel_error(got, want), 1e-5) << ggml_type_name(t) << " " << key;
    }
  }
}

// The Q4_0 octet layout holds the same rows: for 8 and 24 rows of 64 and 192 columns, nearly every
// byte moves (a scale or code left where it was would be read as another row's), each group reads
// back to its rows, and rows_f32 over whole and partial ranges (inside a group, across groups,
// a single row) equals the file layout's. Matrices that do not fit are refused.
TEST(GgmlTypes, Q4_0OctetsHoldTheSameRows) {
  for (int64_t rows : {int64_t(8), int64_t(24)})
    for (int64_t cols : {int64_t(64), int64_t(192)}) {
      const auto plain = random_ggml_bytes(GgmlType::Q4_0, rows, cols, 71, 0.5f);
      auto octets = plain;
      q4_0_to_octets(octets, rows, cols);
      const std::string what = std::to_string(rows) + " x " + std::to_string(cols);
      // Nearly every 2-byte unit moves (a few land where they were, row 0's first scale among
      // them).
      std::size_t same = 0;
      for (std::size_t i = 0; i < plain.size(); i += 2)
        same += std::memcmp(plain.data() + i, octets.data() + i, 2) == 0;
      EXPECT_LT(same, plain.size() / 2 / 20) << what;
      const uint64_t group = 8 * ggml_row_bytes(GgmlType::Q4_0, cols);
      for (uint64_t g = 0; g < plain.size() / group; ++g) {
        std::vector<std::byte> back(group);
        q4_0_octets_to_rows(octets.data() + g * group, cols, back.data());
        EXPECT_TRUE(std::equal(back.begin(), back.end(), plain.begin() + g * group))
            << what << ", group " << g;
      }
      const GgmlMatrix rows_layout = GgmlMatrix::owning(rows, cols, GgmlType::Q4_0, plain);
      GgmlMatrix octet_layout = GgmlMatrix::owning(rows, cols, GgmlType::Q4_0, octets);
      octet_layout.layout = GgmlLayout::Q4_0Octets;
      for (auto [begin, end] :
           {std::pair<int64_t, int64_t>{0, rows}, {3, 7}, {5, rows}, {rows - 1, rows}, {8, 8}}) {
        std::vector<float> a(static_cast<std::size_t>((end - begin) * cols)), b(a.size());
        rows_layout.rows_f32(begin, end, a.data());
        octet_layout.rows_f32(begin, end, b.data());
        EXPECT_EQ(a, b) << what << ", rows " << begin << " to " << end;
      }
    }
  EXPECT_TRUE(q4_0_octets_fit(GgmlType::Q4_0, 16, 128));
  EXPECT_FALSE(q4_0_octets_fit(GgmlType::Q4_0, 12, 128));
  EXPECT_FALSE(q4_0_octets_fit(GgmlType::Q4_0, 16, 96));
  EXPECT_FALSE(q4_0_octets_fit(GgmlType::Q8_0, 16, 128));
  auto odd = random_ggml_bytes(GgmlType::Q4_0, 12, 64, 72, 0.5f);
  EXPECT_THROW(q4_0_to_octets(odd, 12, 64), std::invalid_argument);
  EXPECT_THROW(q4_0_to_octets(std::span(odd).first(8 * 36), 8, 128), std::invalid_argument);
}

}  // namespace
}  // namespace lora
