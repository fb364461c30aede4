// The matrix-vector kernels of generation against the reference (the weight dequantized, then a
// plain dot in double), on every instruction set this CPU runs: odd row counts (not a multiple
// of the 4-row loop or the 16-row thread block), several vectors, beta, every MLX group size at
// 4 and 8 bits, the ggml block types with kernels of their own (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
// Q2_K to Q6_K; IQ4_NL and IQ4_XS on AVX2 and AVX-512) and those widened 16 rows at a time (F16,
// BF16, and IQ4 on the portable baseline).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <sstream>
#include <string>

#include "autograd/frozen_gemv.h"
#include "autograd/kernels/gemv_isa.h"
#include "autograd/line_aligned.h"
#include "gguf_test_util.h"
#include "support/test_support.h"

namespace lora {
namespace {

std::vector<float> random_values(std::size_t n, unsigned seed, float sd = 0.5f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

std::vector<GemvIsa> every_isa() {
  std::vector<GemvIsa> out;
  for (GemvIsa isa : {GemvIsa::Scalar, GemvIsa::Avx2, GemvIsa::Avx512, GemvIsa::Avx512Vnni})
    if (gemv_isa_supported(isa)) out.push_back(isa);
  return out;
}

// y = x W^T + beta * y0 from the widened weight, in double; and the bound on float rounding.
struct Reference {
  std::vector<double> y, magnitude;
};
Reference reference(const FrozenWeight& w, const std::vector<float>& x, int64_t n,
                    const std::vector<float>& y0, float beta) {
  const std::vector<float> dense = w.to_f32();
  Reference ref{std::vector<double>(static_cast<std::size_t>(n * w.rows)),
                std::vector<double>(static_cast<std::size_t>(n * w.rows))};
  for (int64_t v = 0; v < n; ++v)
    for (int64_t r = 0; r < w.rows; ++r) {
      double dot = 0, mag = 0;
      for (int64_t c = 0; c < w.cols; ++c) {
        dot += double(dense[r * w.cols + c]) * x[v * w.cols + c];
        mag += std::fabs(double(dense[r * w.cols + c]) * x[v * w.cols + c]);
      }
      const auto at = static_cast<std::size_t>(v * w.rows + r);
      ref.y[at] = dot + double(beta) * y0[at];
      ref.magnitude[at] = mag + std::fabs(double(beta) * y0[at]);
    }
  return ref;
}

// A product under test: frozen_gemv or frozen_short_gemm.
using Product = void (*)(const FrozenWeight&, const float*, int64_t, float*, float, GemvIsa);
void gemv_product(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta,
                  GemvIsa isa) {
  frozen_gemv(w, x, n, y, beta, isa);
}

// Runs `product` on `w` on every instruction set with each count of vectors (by default 1 and 3),
// beta 0 and 0.5, against the reference.
void expect_matches_reference(const FrozenWeight& w, const std::string& what,
                              std::initializer_list<int64_t> counts = {1, 3},
                              Product product = gemv_product) {
  for (int64_t n : counts) {
    const auto x = random_values(static_cast<std::size_t>(n * w.cols), 7 + unsigned(n));
    const auto y0 = random_values(static_cast<std::size_t>(n * w.rows), 11);
    for (float beta : {0.0f, 0.5f}) {
      const Reference ref = reference(w, x, n, y0, beta);
      for (GemvIsa isa : every_isa()) {
        std::vector<float> y = y0;
        product(w, x.data(), n, y.data(), beta, isa);
        for (std::size_t i = 0; i < y.size(); ++i)
          ASSERT_NEAR(y[i], ref.y[i], 2e-6 * ref.magnitude[i] + 1e-6)
              << what << ", " << gemv_isa_name(isa) << ", n " << n << ", beta " << beta
              << ", output " << i;
      }
    }
  }
}

// 37 rows: two 16-row blocks and a ragged one, and 4-row loops with a remainder of 1.
constexpr int64_t kRows = 37;

TEST(FrozenGemv, MlxQuantizedRowsEqualTheDequantizedProduct) {
  const int64_t cols = 384;  // three 128-groups, six 64-groups, twelve 32-groups
  const auto w = random_values(kRows * cols, 1, 0.1f);
  for (int bits : {4, 8, 3})
    for (int group : {32, 64, 128})
      for (DType scales : {DType::BF16, DType::F32}) {
        const auto q = FrozenWeight::from_quantized(quantize(w, kRows, cols, bits, group, scales));
        expect_matches_reference(q, std::to_string(bits) + "-bit, group " + std::to_string(group) +
                                        ", " + std::string(dtype_name(scales)) + " scales");
      }
}

// x as GemvActivations::Int8 rounds it: per group, dx = max |x| / 127 and q = round(x * 127 /
// max |x|); the rounded values dx * q, and each element's dx.
struct RoundedX {
  std::vector<float> values, steps;
};
RoundedX rounded_to_int8(const std::vector<float>& x, int64_t group) {
  RoundedX r{std::vector<float>(x.size()), std::vector<float>(x.size())};
  for (std::size_t g0 = 0; g0 < x.size(); g0 += static_cast<std::size_t>(group)) {
    float amax = 0.0f;
    for (std::size_t i = g0; i < g0 + group; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float dx = amax / 127.0f, inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (std::size_t i = g0; i < g0 + group; ++i) {
      r.values[i] = dx * std::nearbyint(x[i] * inv);
      r.steps[i] = dx;
    }
  }
  return r;
}

// frozen_gemv with int8 activations on `w`, whose weights are (coded part) + `offset` (MLX: the
// group's bias; ggml blocks: what the codes' zero dequantizes to): each output against
// (coded part) . (x rounded per `group` elements) + offset . x in double, to float rounding, and
// against the exact product within the rounding of x (half a step per element, times |coded|).
// One and three vectors, beta 0 and 0.5, every instruction set with int8 kernels for `w`.
void expect_int8_product(const FrozenWeight& w, const std::vector<float>& offset, int64_t group,
                         const std::string& what, bool scalar_has_kernel) {
  const int64_t rows = w.rows, cols = w.cols;
  const std::vector<float> dense = w.to_f32();
  for (int64_t n : {1, 3}) {
    const auto x = random_values(static_cast<std::size_t>(n * cols), 32 + unsigned(n));
    const RoundedX xr = rounded_to_int8(x, group);
    const auto y0 = random_values(static_cast<std::size_t>(n * rows), 33);
    for (float beta : {0.0f, 0.5f})
      for (GemvIsa isa : every_isa()) {
        if (isa == GemvIsa::Scalar && !scalar_has_kernel) continue;
        std::vector<float> y = y0;
        const GemvProduct product{&w, y.data(), beta};
        frozen_gemv({&product, 1}, x.data(), n, isa, GemvActivations::Int8);
        for (int64_t v = 0; v < n; ++v)
          for (int64_t r = 0; r < rows; ++r) {
            double rounded = 0, exact = 0, magnitude = 0, bound = 0;
            for (int64_t c = 0; c < cols; ++c) {
              const auto i = static_cast<std::size_t>(v * cols + c);
              const auto at = static_cast<std::size_t>(r * cols + c);
              const double coded = double(dense[at]) - offset[at];
              rounded += coded * xr.values[i] + double(offset[at]) * x[i];
              exact += double(dense[at]) * x[i];
              magnitude += std::fabs(coded * xr.values[i]) + std::fabs(offset[at] * x[i]);
              bound += std::fabs(coded) * xr.steps[i] / 2;
            }
            const auto at = static_cast<std::size_t>(v * rows + r);
            const double base = double(beta) * y0[at];
            const std::string where = what + ", " + std::string(gemv_isa_name(isa)) + ", n " +
                                      std::to_string(n) + ", row " + std::to_string(r);
            ASSERT_NEAR(y[at], rounded + base, 2e-6 * (magnitude + std::fabs(base)) + 1e-6)
                << where;
            ASSERT_NEAR(y[at], exact + base, bound + 2e-6 * magnitude + 1e-6) << where;
          }
      }
  }
}

// MLX 4-bit rows with int8 activations: x rounded per the weight's group. Rows of 9 groups leave
// every vector width a partial last step; 37 rows leave the 4-row loop a tail.
TEST(FrozenGemv, Int8ActivationsEqualTheProductOfTheRoundedInput) {
  for (int64_t group : {32, 64, 128})
    for (int64_t cols : {9 * group, int64_t(1024)}) {
      const auto q = quantize(random_values(kRows * cols, 31, 0.1f), kRows, cols, 4, int(group));
      std::vector<float> bias(static_cast<std::size_t>(kRows * cols));
      for (std::size_t i = 0; i < bias.size(); ++i)
        bias[i] = q.biases[i / static_cast<std::size_t>(group)];
      expect_int8_product(FrozenWeight::from_quantized(q), bias, group,
                          "group " + std::to_string(group) + ", cols " + std::to_string(cols),
                          /*scalar_has_kernel=*/true);
    }
}

// Int8 applies to MLX 4-bit weights and to the ggml blocks with int8 kernels (on AVX2 and
// AVX-512: Q2_K to Q8_0, IQ1_S to IQ4_XS, MXFP4, TQ1_0, TQ2_0): the other storages (8-bit MLX,
// f32, F16, BF16), and the blocks on the portable baseline, give their f32 results unchanged.
TEST(FrozenGemv, Int8ActivationsLeaveOtherStoragesAsTheyAre) {
  const int64_t cols = 256, n = 2;
  std::vector<std::pair<std::string, FrozenWeight>> weights;
  weights.emplace_back("8-bit", FrozenWeight::from_quantized(quantize(
                                    random_values(kRows * cols, 41, 0.1f), kRows, cols, 8, 64)));
  weights.emplace_back("f32", FrozenWeight::from_f32(random_values(kRows * cols, 43), kRows, cols));
  for (GgmlType t : test::kAllGgmlTypes)
    weights.emplace_back(ggml_type_name(t),
                         FrozenWeight::from_ggml(GgmlMatrix::owning(
                             kRows, cols, t, test::random_ggml_bytes(t, kRows, cols, 42, 0.5f))));
  const auto x = random_values(static_cast<std::size_t>(n * cols), 44);
  for (const auto& [what, w] : weights)
    for (GemvIsa isa : every_isa()) {
      const bool block_type = what.front() == 'Q' || what.front() == 'I' ||
                              what.starts_with("MXFP4") || what.starts_with("TQ");
      const bool int8_kernel = isa != GemvIsa::Scalar && block_type;
      std::vector<float> plain(static_cast<std::size_t>(n * kRows)), int8(plain.size());
      const GemvProduct a{&w, plain.data()}, b{&w, int8.data()};
      frozen_gemv({&a, 1}, x.data(), n, isa, GemvActivations::F32);
      frozen_gemv({&b, 1}, x.data(), n, isa, GemvActivations::Int8);
      EXPECT_EQ(plain == int8, !int8_kernel) << what << ", " << gemv_isa_name(isa);
    }
}

// A ggml block row's weights as (coded part) + (offset): the offset is what the row dequantizes
// to with every code zero (Q4_0's -8 d, Q4_1's m, Q8_0's 0, Q2_K's and Q4_K's -dmin m, Q3_K's
// -4 d sc, Q6_K's -32 d sc), the coded part the rest. `codes` is each block's bytes [first, end)
// that are zeroed for it: its code bytes, high bits included; for IQ4 and the codebook types,
// whose codes have no offset (and whose code 0 is not zero), its scale d instead, which makes
// the offset 0. IQ1's and TQ's values -1, 0, 1 count from -1: their offset is what entry 0 (all
// -1) or code 0 (TQ1_0: every byte 0, every trit 0) gives, IQ1's with its shift (IQ1_S's high entry
// bits share a word with the group's scale and shift sign, IQ1_M's a nibble with the entry's shift
// sign: only they go).
std::vector<float> offsets_of(GgmlType t, std::vector<std::byte> bytes, int64_t rows, int64_t cols,
                              std::pair<int, int> codes) {
  const auto block = static_cast<std::size_t>(ggml_block_bytes(t));
  for (std::size_t b = 0; b < bytes.size(); b += block) {
    std::fill(bytes.begin() + b + codes.first, bytes.begin() + b + codes.second, std::byte{0});
    for (int g = 0; g < 8; ++g) {
      if (t == GgmlType::IQ1_S) bytes[b + 34 + 2 * g] = std::byte{0};  // high bits 0-7
      if (t == GgmlType::IQ1_S) bytes[b + 35 + 2 * g] &= std::byte{0xF0};
      if (t == GgmlType::IQ1_M) bytes[b + 32 + g] &= std::byte{0x88};
      if (t == GgmlType::IQ1_M) bytes[b + 40 + g] &= std::byte{0x88};
    }
  }
  return FrozenWeight::from_ggml(GgmlMatrix::owning(rows, cols, t, bytes)).to_f32();
}

// The ggml blocks with int8 kernels (Q4_0 to Q8_0, Q2_K to Q6_K, IQ4_NL, IQ4_XS, MXFP4, IQ1_S to
// IQ3_S, TQ1_0, TQ2_0): x rounded per 32 elements.
// Rows of one and three super-blocks; for the 32-element blocks also rows of three blocks, which
// the kernels that take blocks in pairs finish with one alone.
TEST(FrozenGemv, Int8ActivationsOnGgmlBlocksEqualTheProductOfTheRoundedInput) {
  const std::pair<GgmlType, std::pair<int, int>> types[] = {
      {GgmlType::Q4_0, {2, 18}},   {GgmlType::Q4_1, {4, 20}},   {GgmlType::Q5_0, {2, 22}},
      {GgmlType::Q5_1, {4, 24}},   {GgmlType::Q8_0, {2, 34}},   {GgmlType::Q4_K, {16, 144}},
      {GgmlType::Q5_K, {16, 176}}, {GgmlType::Q6_K, {0, 192}},  {GgmlType::Q2_K, {16, 80}},
      {GgmlType::Q3_K, {0, 96}},   {GgmlType::IQ4_NL, {0, 2}},  {GgmlType::IQ4_XS, {0, 2}},
      {GgmlType::MXFP4, {1, 17}},  {GgmlType::IQ2_XXS, {0, 2}}, {GgmlType::IQ2_XS, {0, 2}},
      {GgmlType::IQ2_S, {0, 2}},   {GgmlType::IQ3_XXS, {0, 2}}, {GgmlType::IQ3_S, {0, 2}},
      {GgmlType::IQ1_S, {2, 34}},  {GgmlType::IQ1_M, {0, 32}},  {GgmlType::TQ2_0, {0, 64}},
      {GgmlType::TQ1_0, {0, 52}}};
  for (const auto& [t, codes] : types)
    for (int64_t cols : {int64_t(96), int64_t(256), int64_t(768)}) {
      if (cols % ggml_block_elems(t) != 0) continue;
      const auto bytes = test::random_ggml_bytes(t, kRows, cols, 51, 0.5f);
      const auto w = FrozenWeight::from_ggml(GgmlMatrix::owning(kRows, cols, t, bytes));
      expect_int8_product(w, offsets_of(t, bytes, kRows, cols, codes), 32,
                          std::string(ggml_type_name(t)) + ", cols " + std::to_string(cols),
                          /*scalar_has_kernel=*/false);
    }
}

// Q4_0 in octets (GgmlLayout::Q4_0Octets): its int8 kernel against the rounded-input reference
// (with the offsets of the same rows in the file layout), and against the file layout's int8
// kernel to float rounding; with f32 activations (rows widened, on every instruction set) against
// the plain reference. 8 rows (one group), 40 (groups over more than one 16-row block) and 1000
// (split over threads); 64 columns (one piece), 192 and 2048.
TEST(FrozenGemv, Q4_0OctetsEqualTheFileLayout) {
  for (int64_t rows : {int64_t(8), int64_t(40), int64_t(1000)})
    for (int64_t cols : {int64_t(64), int64_t(192), int64_t(2048)}) {
      if (rows * cols > 1000 * 192) continue;
      const auto bytes = test::random_ggml_bytes(GgmlType::Q4_0, rows, cols, 81, 0.5f);
      auto octet_bytes = bytes;
      q4_0_to_octets(octet_bytes, rows, cols);
      GgmlMatrix m = GgmlMatrix::owning(rows, cols, GgmlType::Q4_0, octet_bytes);
      m.layout = GgmlLayout::Q4_0Octets;
      const auto octets = FrozenWeight::from_ggml(std::move(m));
      const auto plain =
          FrozenWeight::from_ggml(GgmlMatrix::owning(rows, cols, GgmlType::Q4_0, bytes));
      const std::string what =
          "Q4_0 octets, " + std::to_string(rows) + " x " + std::to_string(cols);
      expect_int8_product(octets, offsets_of(GgmlType::Q4_0, bytes, rows, cols, {2, 18}), 32, what,
                          /*scalar_has_kernel=*/false);
      expect_matches_reference(octets, what);
      const int64_t n = 2;
      const auto x = random_values(static_cast<std::size_t>(n * cols), 82);
      for (GemvIsa isa : every_isa()) {
        std::vector<float> a(static_cast<std::size_t>(n * rows), 0.25f), b = a;
        const GemvProduct pa{&plain, a.data(), 0.5f}, pb{&octets, b.data(), 0.5f};
        frozen_gemv({&pa, 1}, x.data(), n, isa, GemvActivations::Int8);
        frozen_gemv({&pb, 1}, x.data(), n, isa, GemvActivations::Int8);
        for (std::size_t i = 0; i < a.size(); ++i)
          ASSERT_NEAR(a[i], b[i], 1e-5 * (1 + std::fabs(a[i])))
              << what << ", " << gemv_isa_name(isa) << ", output " << i;
      }
    }
}

// The VNNI copy adds the same integer products with fewer instructions, so its int8 products equal
// the plain AVX-512 copy's bit for bit: MLX 4-bit rows, every ggml block type with an int8 kernel
// (rows of 37 and 5 leave the 4-row loops their tails), Q4_0 in octets, and Q8_0 at the largest
// byte sums (codes of -128 against x that rounds to +-127 everywhere: 2 * 128 * 127 per byte pair
// in 16 bits).
TEST(FrozenGemv, VnniInt8ProductsEqualThePlainAvx512Ones) {
  if (!gemv_isa_supported(GemvIsa::Avx512Vnni)) GTEST_SKIP() << "no AVX512-VNNI on this CPU";
  std::vector<std::pair<std::string, FrozenWeight>> weights;
  for (int group : {32, 64, 128})
    weights.emplace_back(
        "MLX 4-bit, group " + std::to_string(group),
        FrozenWeight::from_quantized(
            quantize(random_values(kRows * 9 * group, 61, 0.1f), kRows, 9 * group, 4, group)));
  for (GgmlType t :
       {GgmlType::Q4_0,   GgmlType::Q4_1,    GgmlType::Q5_0,  GgmlType::Q5_1,    GgmlType::Q8_0,
        GgmlType::Q2_K,   GgmlType::Q3_K,    GgmlType::Q4_K,  GgmlType::Q5_K,    GgmlType::Q6_K,
        GgmlType::IQ4_NL, GgmlType::IQ4_XS,  GgmlType::MXFP4, GgmlType::IQ2_XXS, GgmlType::IQ2_XS,
        GgmlType::IQ2_S,  GgmlType::IQ3_XXS, GgmlType::IQ3_S, GgmlType::IQ1_S,   GgmlType::IQ1_M,
        GgmlType::TQ1_0,  GgmlType::TQ2_0})
    for (int64_t rows : {kRows, int64_t(5)})
      weights.emplace_back(std::string(ggml_type_name(t)) + ", " + std::to_string(rows) + " rows",
                           FrozenWeight::from_ggml(GgmlMatrix::owning(
                               rows, 768, t, test::random_ggml_bytes(t, rows, 768, 62, 0.5f))));
  std::vector<std::byte> extreme(ggml_row_bytes(GgmlType::Q8_0, 768) * 6, std::byte{0x80});
  for (std::size_t b = 0; b < extreme.size(); b += 34) {  // d = 1 (f16 0x3C00)
    extreme[b] = std::byte{0x00};
    extreme[b + 1] = std::byte{0x3C};
  }
  weights.emplace_back("Q8_0, codes -128", FrozenWeight::from_ggml(GgmlMatrix::owning(
                                               6, 768, GgmlType::Q8_0, extreme)));
  auto octets = test::random_ggml_bytes(GgmlType::Q4_0, 40, 768, 64, 0.5f);
  q4_0_to_octets(octets, 40, 768);
  GgmlMatrix octet_matrix = GgmlMatrix::owning(40, 768, GgmlType::Q4_0, octets);
  octet_matrix.layout = GgmlLayout::Q4_0Octets;
  weights.emplace_back("Q4_0 octets", FrozenWeight::from_ggml(std::move(octet_matrix)));
  std::vector<float> x(2 * 9 * 128);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = i % 3 ? 1.0f : -1.0f;
  std::vector<float> random_x = random_values(x.size(), 63);
  for (const auto& [what, w] : weights)
    for (const auto* input : {&x, &random_x}) {
      const int64_t n = 2;
      std::vector<float> plain(static_cast<std::size_t>(n * w.rows), 0.5f), vnni = plain;
      const GemvProduct a{&w, plain.data(), 0.5f}, b{&w, vnni.data(), 0.5f};
      frozen_gemv({&a, 1}, input->data(), n, GemvIsa::Avx512, GemvActivations::Int8);
      frozen_gemv({&b, 1}, input->data(), n, GemvIsa::Avx512Vnni, GemvActivations::Int8);
      EXPECT_EQ(plain, vnni) << what << (input == &x ? ", x of +-1" : ", random x");
      EXPECT_TRUE(std::isfinite(plain[0]) && plain[0] != 0.5f) << what;
    }
}

TEST(FrozenGemv, GgmlBlocksEqualTheDequantizedProduct) {
  const int64_t cols = 512;  // two K-quant super-blocks, sixteen 32-element blocks
  for (GgmlType t : test::kAllGgmlTypes) {
    const auto bytes = test::random_ggml_bytes(t, kRows, cols, 3, 0.5f);
    const auto w = FrozenWeight::from_ggml(GgmlMatrix::owning(kRows, cols, t, bytes));
    expect_matches_reference(w, std::string(ggml_type_name(t)));
  }
}

// The smallest rows each block type has (one 256-element super-block, three 32-element blocks:
// the 16-lane loops' single pass and the 8-lane loops' two), with row counts that leave the
// 4-row loop a tail of 1 and 3.
TEST(FrozenGemv, GgmlBlocksOnShortRowsEqualTheDequantizedProduct) {
  for (GgmlType t : test::kAllGgmlTypes) {
    const int64_t cols = ggml_block_elems(t) == 256 ? 256 : 96;
    for (int64_t rows : {int64_t(5), int64_t(7)}) {
      const auto bytes = test::random_ggml_bytes(t, rows, cols, 13, 0.5f);
      const auto w = FrozenWeight::from_ggml(GgmlMatrix::owning(rows, cols, t, bytes));
      expect_matches_reference(w, std::string(ggml_type_name(t)) + ", " + std::to_string(rows) +
                                      " x " + std::to_string(cols));
    }
  }
}

TEST(FrozenGemv, FloatRowsEqualThePlainProduct) {
  // 45 columns: the f32 loop's vector part and a scalar tail.
  for (int64_t cols : {int64_t(45), int64_t(256)}) {
    const auto w = random_values(kRows * cols, 5);
    expect_matches_reference(FrozenWeight::from_f32(w, kRows, cols), "f32");
    std::vector<uint16_t> b(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) b[i] = f32_to_bf16(w[i]);
    expect_matches_reference(FrozenWeight::from_bf16(b, kRows, cols), "bf16");
  }
}

// A product big enough to be split over threads (more than one thread block per thread).
TEST(FrozenGemv, ThreadedProductEqualsTheReference) {
  const int64_t rows = 1000, cols = 256;
  const auto w = random_values(rows * cols, 9, 0.1f);
  expect_matches_reference(FrozenWeight::from_quantized(quantize(w, rows, cols, 4, 64)),
                           "4-bit 1000 rows");
}

// frozen_matmul sends up to kGemvMaxTokens tokens to these kernels, up to kShortGemmMaxTokens to
// the short GEMM and more to the tiled sgemm: all three agree.
TEST(FrozenGemv, MatmulAgreesAcrossTheTokenThresholds) {
  const int64_t cols = 256;
  const auto w = FrozenWeight::from_quantized(
      quantize(random_values(kRows * cols, 4, 0.1f), kRows, cols, 4, 32, DType::F16));
  for (int64_t n : {kGemvMaxTokens + 1, kShortGemmMaxTokens, kShortGemmMaxTokens + 1}) {
    const auto x = random_values(static_cast<std::size_t>(n * cols), 6);
    std::vector<float> batched(static_cast<std::size_t>(n * kRows)), gemv(batched.size());
    frozen_matmul(w, x.data(), n, batched.data());
    for (int64_t v = 0; v < n; ++v) frozen_matmul(w, x.data() + v * cols, 1, &gemv[v * kRows]);
    for (std::size_t i = 0; i < batched.size(); ++i)
      ASSERT_NEAR(gemv[i], batched[i], 1e-4) << n << " tokens, output " << i;
  }
}

// The short GEMM against the reference on every instruction set: 37 rows (full blocks of rows and
// a partial one), token counts that fill one vector of tokens or part of one (9, 16), two
// vectors and a tail of part of one (40), and several pairs (64); beta 0 and 0.5; storages
// widened by their own rows_f32 (4- and 8-bit MLX, Q4_0, Q4_K, bf16, f32).
TEST(FrozenGemv, ShortGemmEqualsTheReference) {
  const int64_t cols = 256;
  const auto dense = random_values(kRows * cols, 26, 0.1f);
  std::vector<uint16_t> b(dense.size());
  for (std::size_t i = 0; i < dense.size(); ++i) b[i] = f32_to_bf16(dense[i]);
  std::vector<std::pair<std::string, FrozenWeight>> weights;
  weights.emplace_back("4-bit", FrozenWeight::from_quantized(quantize(dense, kRows, cols, 4, 64)));
  weights.emplace_back("8-bit", FrozenWeight::from_quantized(quantize(dense, kRows, cols, 8, 32)));
  for (GgmlType t : {GgmlType::Q4_0, GgmlType::Q4_K})
    weights.emplace_back(ggml_type_name(t),
                         FrozenWeight::from_ggml(GgmlMatrix::owning(
                             kRows, cols, t, test::random_ggml_bytes(t, kRows, cols, 27, 0.5f))));
  weights.emplace_back("bf16", FrozenWeight::from_bf16(b, kRows, cols));
  weights.emplace_back("f32", FrozenWeight::from_f32(dense, kRows, cols));
  const Product short_gemm = [](const FrozenWeight& w, const float* x, int64_t n, float* y,
                                float beta,
                                GemvIsa isa) { frozen_short_gemm(w, x, n, y, beta, isa); };
  for (const auto& [what, w] : weights)
    expect_matches_reference(w, what, {9, 16, 40, 64}, short_gemm);
}

// The short GEMM's blocks of several register tiles, each going past x in column chunks: 401
// rows (blocks of up to four tiles where the team has up to 8 threads, and a ragged last block)
// by 576 columns (two chunks of 256 and a ragged one of 64), 4-bit MLX and Q4_0.
// The short GEMM's and attention's scratch buffers start on a cache line at every size: small
// ones that glibc serves from its heap at any 16-byte boundary, large ones it maps (16 bytes into
// a page), and after the growth a resize makes.
TEST(FrozenGemv, LineAlignedBuffersStartOnACacheLine) {
  const auto offset = [](const float* p) { return reinterpret_cast<std::uintptr_t>(p) % 64; };
  for (std::size_t n : {std::size_t(1), std::size_t(5), std::size_t(100), std::size_t(70000),
                        std::size_t(1) << 20}) {
    lora::LineAlignedFloats v(n, 1.0f);
    EXPECT_EQ(offset(v.data()), 0u) << n << " floats";
    v.resize(3 * n + 1);
    EXPECT_EQ(offset(v.data()), 0u) << 3 * n + 1 << " floats after a resize";
    EXPECT_EQ(v[n - 1], 1.0f);
  }
}

TEST(FrozenGemv, ShortGemmInTilesAndColumnChunksEqualsTheReference) {
  const int64_t rows = 401, cols = 576;
  const auto dense = random_values(rows * cols, 28, 0.1f);
  const auto mlx = FrozenWeight::from_quantized(quantize(dense, rows, cols, 4, 64));
  const auto q4_0 = FrozenWeight::from_ggml(GgmlMatrix::owning(
      rows, cols, GgmlType::Q4_0, test::random_ggml_bytes(GgmlType::Q4_0, rows, cols, 29, 0.5f)));
  const Product short_gemm = [](const FrozenWeight& w, const float* x, int64_t n, float* y,
                                float beta,
                                GemvIsa isa) { frozen_short_gemm(w, x, n, y, beta, isa); };
  expect_matches_reference(mlx, "4-bit", {9, 64}, short_gemm);
  expect_matches_reference(q4_0, "Q4_0", {9, 64}, short_gemm);
}

// Products of one x in one pass: a 4-bit MLX, a Q4_0 and a bf16 weight (one read with x
// permuted for nibbles, one with group sums, one widened) of 37, 1000 and 5 rows, beta 0 and
// 0.5, on every instruction set: each output equals its product run alone, bit for bit. Weights
// of another width than x's are refused.
TEST(FrozenGemv, ProductsOfOneInputInOnePassEqualEachAlone) {
  const int64_t cols = 256, n = 2;
  const auto mlx = FrozenWeight::from_quantized(
      quantize(random_values(kRows * cols, 21, 0.1f), kRows, cols, 4, 64));
  const auto q4_0 = FrozenWeight::from_ggml(GgmlMatrix::owning(
      1000, cols, GgmlType::Q4_0, test::random_ggml_bytes(GgmlType::Q4_0, 1000, cols, 22, 0.5f)));
  std::vector<uint16_t> b(5 * cols);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = f32_to_bf16(float(i % 7) * 0.1f - 0.3f);
  const auto bf16 = FrozenWeight::from_bf16(b, 5, cols);
  const auto x = random_values(static_cast<std::size_t>(n * cols), 23);
  const FrozenWeight* weights[3] = {&mlx, &q4_0, &bf16};
  for (GemvIsa isa : every_isa())
    for (float beta : {0.0f, 0.5f}) {
      std::vector<std::vector<float>> together, alone;
      std::vector<GemvProduct> products;
      for (const FrozenWeight* w : weights) {
        together.push_back(random_values(static_cast<std::size_t>(n * w->rows), 24));
        alone.push_back(together.back());
      }
      for (std::size_t i = 0; i < 3; ++i)
        products.push_back({weights[i], together[i].data(), beta});
      frozen_gemv(products, x.data(), n, isa);
      for (std::size_t i = 0; i < 3; ++i) {
        frozen_gemv(*weights[i], x.data(), n, alone[i].data(), beta, isa);
        EXPECT_EQ(together[i], alone[i])
            << "product " << i << ", " << gemv_isa_name(isa) << ", beta " << beta;
      }
    }
  const auto narrow = FrozenWeight::from_f32(random_values(3 * 64, 25), 3, 64);
  std::vector<float> y1(n * kRows), y2(n * 3);
  const GemvProduct mixed[2] = {{&mlx, y1.data()}, {&narrow, y2.data()}};
  EXPECT_THROW(frozen_gemv(mixed, x.data(), n), std::invalid_argument);
}

TEST(FrozenGemv, NamesTheInstructionSetItRuns) {
  const std::string name(gemv_isa_name(gemv_isa()));
  EXPECT_TRUE(name == "avx512_vnni" || name == "avx512" || name == "avx2" || name == "scalar")
      << name;
  EXPECT_TRUE(gemv_isa_supported(GemvIsa::Scalar));
}

// Speed is the benchmarks' business, but a prefetch the compiler drops costs decode half its speed
// without changing a single result, so nothing else would notice: every copy of the kernels (the
// AVX-512 and AVX2 files and the portable one) must hold at least one prefetch per row kernel.
TEST(FrozenGemv, CompiledKernelsKeepTheirPrefetches) {
  const std::string archive = std::string(LORA_BINARY_DIR) + "/autograd/libloracpp_autograd.a";
  const test::CommandResult dump =
      test::run_program({"objdump", "-d", "--no-show-raw-insn", archive});
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  std::map<std::string, int> prefetches;  // per object file of the archive
  std::istringstream lines(dump.out);
  std::string line, object;
  while (std::getline(lines, line)) {
    if (line.find("file format") != std::string::npos) object = line.substr(0, line.find(':'));
    if (line.find("prefetcht0") != std::string::npos) ++prefetches[object];
  }
  constexpr int kRowKernels = (offsetof(gemv::Kernels, tile_gemm) - offsetof(gemv::Kernels, mlx4)) /
                              sizeof(gemv::RowsKernel);
  for (const char* copy : {"gemv_avx512.cpp.o", "gemv_avx2.cpp.o", "frozen_gemv.cpp.o"})
    EXPECT_GE(prefetches[copy], kRowKernels) << copy;
}

// The tile GEMM of every vector instruction set against the product in double: 29 rows of C (full
// row blocks, a block of 4 and single rows), three vectors of columns (a two-vector panel and a
// one-vector tail), A read by rows and by columns (a transposed operand) with padded strides,
// alpha, and accumulation into C. Columns of C past n are never written.
TEST(FrozenGemv, TileGemmEqualsTheReference) {
  const std::vector<std::pair<GemvIsa, const gemv::Kernels*>> copies = {
      {GemvIsa::Avx2, &gemv_avx2::kernels()}, {GemvIsa::Avx512, &gemv_avx512::kernels()}};
  for (const auto& [isa, kernels] : copies) {
    if (!gemv_isa_supported(isa)) continue;
    const int64_t m = 29, n = 3 * kernels->lanes, k = 37, lda = 41, ldb = n + 5, ldc = n + 3;
    const auto a = random_values(static_cast<std::size_t>(lda * lda), 31);
    const auto b = random_values(static_cast<std::size_t>(k * ldb), 32);
    const auto c0 = random_values(static_cast<std::size_t>(m * ldc), 33);
    for (const bool by_columns : {false, true})
      for (const bool accumulate : {false, true}) {
        SCOPED_TRACE(std::string(gemv_isa_name(isa)) + (by_columns ? ", A^T" : ", A") +
                     (accumulate ? ", accumulating" : ""));
        gemv::TileArgs t;
        t.m = m;
        t.n = n;
        t.k = k;
        t.alpha = 0.7f;
        t.a = a.data();
        t.a_row = by_columns ? 1 : lda;
        t.a_col = by_columns ? lda : 1;
        t.b = b.data();
        t.ldb = ldb;
        std::vector<float> c = c0;
        t.c = c.data();
        t.ldc = ldc;
        t.accumulate = accumulate;
        kernels->tile_gemm(t);
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < ldc; ++j) {
            const auto at = static_cast<std::size_t>(i * ldc + j);
            if (j >= n) {
              ASSERT_EQ(c[at], c0[at]) << "row " << i << ", column " << j << " past n";
              continue;
            }
            double want = 0, magnitude = 0;
            for (int64_t p = 0; p < k; ++p) {
              const double term = double(a[i * t.a_row + p * t.a_col]) * b[p * ldb + j];
              want += term;
              magnitude += std::fabs(term);
            }
            want = 0.7 * want + (accumulate ? double(c0[at]) : 0.0);
            ASSERT_NEAR(c[at], want, 1e-6 * (magnitude + std::fabs(c0[at])))
                << "row " << i << ", column " << j;
          }
      }
  }
}

}  // namespace
}  // namespace lora
