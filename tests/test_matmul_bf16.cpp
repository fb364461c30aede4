// The bf16 products of the frozen base against exact references.
//
// Bound: inputs and weights are rounded to bf16 (relative error <= 2^-9 each) and products are
// accumulated in f32, so each output differs from the f32 product by at most
// 2^-8 * sum_k |x_k w_k| plus f32 rounding; we assert 2^-7 * sum_k |x_k w_k|. Against a double
// reference computed from the bf16-rounded operands the only error left is f32 accumulation,
// asserted at 1e-5 * sum_k |x_k w_k|.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "autograd/dtype.h"
#include "autograd/kernels/matmul_bf16.h"

namespace lora {
namespace {

struct Case {
  int64_t rows, cols, n;
};

float rounded(float v) { return bf16_to_f32(f32_to_bf16(v)); }

void check_product(Bf16Product p, const Case& c, bool packed, float beta) {
  std::mt19937 rng(uint32_t(c.rows * 131 + c.cols * 7 + c.n));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(std::size_t(c.rows * c.cols));
  for (float& v : w) v = nd(rng);
  std::vector<uint16_t> wb(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) wb[i] = f32_to_bf16(w[i]);
  const bool fwd = p == Bf16Product::XWt;
  const int64_t k = fwd ? c.cols : c.rows, n_out = fwd ? c.rows : c.cols;
  std::vector<float> x(std::size_t(c.n * k));
  for (float& v : x) v = nd(rng);
  std::vector<float> y0(std::size_t(c.n * n_out));
  for (float& v : y0) v = nd(rng);
  std::vector<float> y = y0;
  if (packed) {
    const PackedBf16Weight pw(wb.data(), c.rows, c.cols, p);
    pw.multiply(x.data(), c.n, y.data(), beta);
    pw.multiply(x.data(), 0, y.data(), beta);  // no rows: a no-op
  } else {
    matmul_bf16(p, wb.data(), c.rows, c.cols, x.data(), c.n, y.data(), beta);
  }
  for (int64_t i = 0; i < c.n; ++i)
    for (int64_t j = 0; j < n_out; ++j) {
      double exact_f32 = 0, exact_bf16 = 0, magnitude = 0;
      for (int64_t t = 0; t < k; ++t) {
        const float wv = fwd ? w[j * c.cols + t] : w[t * c.cols + j];
        const float xv = x[i * k + t];
        exact_f32 += double(xv) * wv;
        exact_bf16 += double(rounded(xv)) * rounded(wv);
        magnitude += std::abs(double(xv) * wv);
      }
      const double prior = double(beta) * y0[i * n_out + j];
      const double got = y[i * n_out + j];
      ASSERT_NEAR(got, exact_bf16 + prior, 1e-5 * magnitude + 1e-6 * std::abs(prior))
          << "row " << i << " col " << j;
      ASSERT_NEAR(got, exact_f32 + prior, std::ldexp(magnitude, -7) + 1e-6 * std::abs(prior))
          << "row " << i << " col " << j;
    }
}

TEST(MatmulBf16, ReportsIsa) {
  EXPECT_FALSE(bf16_matmul_isa().empty());
  RecordProperty("isa", bf16_matmul_isa());
}

TEST(MatmulBf16, PackedMatchesReferenceBothProducts) {
  if (!bf16_matmul_available()) GTEST_SKIP() << "no native bf16 matmul: bf16 runs as f32 here";
  for (const Case& c : {Case{64, 96, 33}, Case{48, 176, 1}, Case{130, 64, 257}})
    for (const Bf16Product p : {Bf16Product::XWt, Bf16Product::GW}) {
      SCOPED_TRACE(testing::Message() << c.rows << "x" << c.cols << " n=" << c.n);
      check_product(p, c, /*packed=*/true, 0.0f);
      check_product(p, c, /*packed=*/true, 1.0f);
    }
}

TEST(MatmulBf16, PlainMatchesReferenceBothProducts) {
  if (!bf16_matmul_available()) GTEST_SKIP() << "no native bf16 matmul: bf16 runs as f32 here";
  for (const Case& c : {Case{64, 96, 33}, Case{37, 80, 5}})
    for (const Bf16Product p : {Bf16Product::XWt, Bf16Product::GW}) {
      SCOPED_TRACE(testing::Message() << c.rows << "x" << c.cols << " n=" << c.n);
      check_product(p, c, /*packed=*/false, 0.0f);
      check_product(p, c, /*packed=*/false, 0.5f);
    }
}

TEST(MatmulBf16, PackedWeightServesManyInputSizes) {
  if (!bf16_matmul_available()) GTEST_SKIP() << "no native bf16 matmul: bf16 runs as f32 here";
  // One packed copy, several token counts (the step loop and the loss chunks use different ones).
  std::vector<uint16_t> wb(64 * 32);
  for (std::size_t i = 0; i < wb.size(); ++i) wb[i] = f32_to_bf16(float(i % 7) - 3.0f);
  const PackedBf16Weight pw(wb.data(), 64, 32, Bf16Product::XWt);
  EXPECT_EQ(pw.rows(), 64);
  EXPECT_EQ(pw.cols(), 32);
  EXPECT_GE(pw.packed_bytes(), wb.size() * sizeof(uint16_t));
  for (int64_t n : {1, 3, 16, 100}) {
    std::vector<float> x(std::size_t(n * 32), 1.0f), y(std::size_t(n * 64), -1.0f);
    pw.multiply(x.data(), n, y.data());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < 64; ++j) {
        float expect = 0;
        for (int64_t t = 0; t < 32; ++t) expect += float((j * 32 + t) % 7) - 3.0f;
        ASSERT_EQ(y[i * 64 + j], expect);  // small integers: exact in bf16 and f32
      }
  }
}

TEST(MatmulBf16, RejectsEmptyWeight) {
  std::vector<uint16_t> wb(4);
  EXPECT_THROW(PackedBf16Weight(wb.data(), 0, 4, Bf16Product::XWt), std::invalid_argument);
}

}  // namespace
}  // namespace lora
