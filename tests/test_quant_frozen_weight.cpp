// FrozenWeight: storage formats and the two products, checked against naive loops.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "autograd/frozen_weight.h"

namespace lora {
namespace {

std::vector<float> random_values(std::size_t n, unsigned seed, float sd = 0.1f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// 300 rows, 5 vectors: a few tokens (the matrix-vector kernels, or one widened tile).
constexpr int64_t kRows = 300, kCols = 128, kN = 5;

std::vector<FrozenWeight> every_format(const std::vector<float>& w) {
  std::vector<FrozenWeight> out;
  out.push_back(FrozenWeight::from_f32(w, kRows, kCols));
  std::vector<uint16_t> b(w.size());
  for (std::size_t i = 0; i < w.size(); ++i) b[i] = f32_to_bf16(w[i]);
  out.push_back(FrozenWeight::from_bf16(b, kRows, kCols));
  out.push_back(FrozenWeight::from_quantized(quantize(w, kRows, kCols, 4, 64, DType::BF16)));
  out.push_back(FrozenWeight::from_quantized(quantize(w, kRows, kCols, 3, 32, DType::F16)));
  out.push_back(FrozenWeight::from_quantized(quantize(w, kRows, kCols, 8, 128)));
  return out;
}

TEST(FrozenWeight, StoredBytesFollowTheFormat) {
  auto w = random_values(kRows * kCols, 1);
  auto formats = every_format(w);
  EXPECT_EQ(formats[0].stored_bytes(), std::size_t(kRows * kCols * 4));
  EXPECT_EQ(formats[1].stored_bytes(), std::size_t(kRows * kCols * 2));
  // 4-bit: half a byte per weight + a scale and a bias per 64 weights, stored as bf16 but held
  // (and read by every product) as f32.
  EXPECT_EQ(formats[2].stored_bytes(), std::size_t(kRows * kCols / 2 + kRows * 2 * 2 * 4));
  EXPECT_EQ(formats[4].stored_bytes(), std::size_t(kRows * kCols + kRows * 1 * 2 * 4));
}

TEST(FrozenWeight, RowsMatchWholeMatrix) {
  auto w = random_values(kRows * kCols, 2);
  for (const auto& f : every_format(w)) {
    auto all = f.to_f32();
    ASSERT_EQ(all.size(), w.size());
    std::vector<float> part(3 * kCols);
    f.rows_f32(257, 260, part.data());
    for (int64_t i = 0; i < 3 * kCols; ++i) ASSERT_EQ(part[i], all[257 * kCols + i]);
    EXPECT_THROW(f.rows_f32(299, 301, part.data()), std::out_of_range);
  }
  // bf16 widening is exact; f32 is the data itself.
  auto formats = every_format(w);
  EXPECT_EQ(formats[0].to_f32(), w);
  EXPECT_EQ(formats[1].to_f32()[17], bf16_to_f32(f32_to_bf16(w[17])));
}

TEST(FrozenWeight, MatmulEqualsNaiveLoopForEveryFormat) {
  auto w = random_values(kRows * kCols, 3);
  auto x = random_values(kN * kCols, 4, 1.0f);
  auto y0 = random_values(kN * kRows, 5, 1.0f);
  for (const auto& f : every_format(w)) {
    auto dense = f.to_f32();
    for (float beta : {0.0f, 1.0f, 0.5f}) {
      auto y = y0;
      frozen_matmul(f, x.data(), kN, y.data(), beta);
      for (int64_t i = 0; i < kN; ++i) {
        for (int64_t r = 0; r < kRows; ++r) {
          double ref = beta * double(y0[i * kRows + r]);
          for (int64_t c = 0; c < kCols; ++c)
            ref += double(x[i * kCols + c]) * dense[r * kCols + c];
          ASSERT_NEAR(y[i * kRows + r], ref, 1e-4)
              << "format " << int(f.format) << " beta " << beta;
        }
      }
    }
  }
}

TEST(FrozenWeight, InputGradEqualsNaiveLoopForEveryFormat) {
  auto w = random_values(kRows * kCols, 6);
  auto g = random_values(kN * kRows, 7, 1.0f);
  auto dx0 = random_values(kN * kCols, 8, 1.0f);
  for (const auto& f : every_format(w)) {
    auto dense = f.to_f32();
    for (float beta : {0.0f, 1.0f}) {
      auto dx = dx0;
      frozen_matmul_input_grad(f, g.data(), kN, dx.data(), beta);
      for (int64_t i = 0; i < kN; ++i) {
        for (int64_t c = 0; c < kCols; ++c) {
          double ref = beta * double(dx0[i * kCols + c]);
          for (int64_t r = 0; r < kRows; ++r)
            ref += double(g[i * kRows + r]) * dense[r * kCols + c];
          ASSERT_NEAR(dx[i * kCols + c], ref, 1e-4) << "format " << int(f.format);
        }
      }
    }
  }
}

// A prompt-sized product (more tokens than the matrix-vector kernels take, few enough for the
// small tiles) over a matrix of 600 rows of 4096: three tiles, the last one ragged, in both
// products, with beta applied once.
TEST(FrozenWeight, FewTokenProductsAcrossSeveralTilesEqualNaiveLoops) {
  constexpr int64_t rows = 600, cols = 4096, n = 12;
  const auto w = random_values(rows * cols, 21);
  const auto x = random_values(n * cols, 22, 1.0f), g = random_values(n * rows, 23, 1.0f);
  const auto y0 = random_values(n * rows, 24, 1.0f), dx0 = random_values(n * cols, 25, 1.0f);
  const float beta = 0.5f;
  const auto f = FrozenWeight::from_quantized(quantize(w, rows, cols, 4, 64, DType::BF16));
  const auto dense = f.to_f32();
  auto y = y0, dx = dx0;
  frozen_matmul(f, x.data(), n, y.data(), beta);
  frozen_matmul_input_grad(f, g.data(), n, dx.data(), beta);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t r = 0; r < rows; ++r) {
      double ref = beta * double(y0[i * rows + r]);
      for (int64_t c = 0; c < cols; ++c) ref += double(x[i * cols + c]) * dense[r * cols + c];
      ASSERT_NEAR(y[i * rows + r], ref, 1e-3) << "token " << i << " row " << r;
    }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < cols; ++c) {
      double ref = beta * double(dx0[i * cols + c]);
      for (int64_t r = 0; r < rows; ++r) ref += double(g[i * rows + r]) * dense[r * cols + c];
      ASSERT_NEAR(dx[i * cols + c], ref, 1e-3) << "token " << i << " column " << c;
    }
}

TEST(FrozenWeight, ConstructorsCheckSizes) {
  EXPECT_THROW(FrozenWeight::from_f32(std::vector<float>(10), 3, 4), std::invalid_argument);
  EXPECT_THROW(FrozenWeight::from_bf16(std::vector<uint16_t>(11), 3, 4), std::invalid_argument);
  QuantizedMatrix q = quantize(std::vector<float>(64, 1.0f), 1, 64, 4, 64);
  q.packed.pop_back();
  EXPECT_THROW(FrozenWeight::from_quantized(q), std::invalid_argument);
}

}  // namespace
}  // namespace lora
