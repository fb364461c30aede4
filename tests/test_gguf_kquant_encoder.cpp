// Our K-quant encoders (autograd/gguf_quantize_k.h: llama.cpp's reference search) against
// llama.cpp's own (make_qkx2_quants / make_qx_quants, without an importance matrix):
// the real ggml_quantize_chunk from node-llama-cpp's libggml-base.so on the same Gaussian rows,
// both dequantized by our decoder. Prints both errors; ours must stay within a stated factor.
// IQ4_NL and IQ4_XS must be llama.cpp's bytes exactly, and our decoder its decoder's floats; the
// types we only read, its decoders' floats.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <random>

#include "autograd/gguf_quant.h"
#include "gguf_test_util.h"
#include "llama_cpp_oracle.h"

namespace lora {
namespace {

using QuantizeChunk = size_t (*)(int, const float*, void*, int64_t, int64_t, int64_t, const float*);

std::filesystem::path libggml_base() {
  return test::llama_cpp_dir() / "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64" /
         "libggml-base.so";
}

double rms_error(GgmlType t, const std::vector<std::byte>& bytes, const std::vector<float>& x,
                 int64_t rows, int64_t cols) {
  std::vector<float> back(x.size());
  for (int64_t r = 0; r < rows; ++r)
    ggml_dequantize_row(t, bytes.data() + r * ggml_row_bytes(t, cols), cols,
                        back.data() + r * cols);
  double sum = 0;
  for (std::size_t i = 0; i < x.size(); ++i) sum += (back[i] - x[i]) * double(back[i] - x[i]);
  return std::sqrt(sum / double(x.size()));
}

// node-llama-cpp's libggml-base.so. Never closed: loading it installs a terminate handler that
// aborts when it finds its own already there, so a second load after an unload would abort; a
// second dlopen while it stays loaded only counts a reference.
struct LibGgml {
  void* handle = dlopen(libggml_base().c_str(), RTLD_NOW | RTLD_LOCAL);
  template <typename F>
  F symbol(const char* name) const {
    return reinterpret_cast<F>(dlsym(handle, name));
  }
};

std::vector<float> gaussian_rows(int64_t rows, int64_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<std::size_t>(rows * cols));
  for (float& v : x) v = normal(rng);
  return x;
}

// Rows of x encoded as `t` by us and by llama.cpp's ggml_quantize_chunk (no importance matrix).
struct Encodings {
  std::vector<std::byte> mine, theirs;
};
Encodings encode_both(QuantizeChunk quantize_chunk, GgmlType t, const std::vector<float>& x,
                      int64_t rows, int64_t cols) {
  const uint64_t rb = ggml_row_bytes(t, cols);
  Encodings e{std::vector<std::byte>(rb * rows), std::vector<std::byte>(rb * rows)};
  for (int64_t r = 0; r < rows; ++r)
    ggml_quantize_row(t, x.data() + r * cols, cols, e.mine.data() + r * rb);
  EXPECT_EQ(quantize_chunk(static_cast<int>(t), x.data(), e.theirs.data(), 0, rows, cols, nullptr),
            rb * rows);
  return e;
}

// Our dispatched decoder and our per-element reference give exactly the floats of llama.cpp's
// `decoder` on the n elements in `bytes`; returns how many are not zero.
int64_t expect_llama_cpps_floats(const LibGgml& lib, GgmlType t, const char* decoder,
                                 const std::vector<std::byte>& bytes, int64_t n) {
  using Dequantize = void (*)(const void*, float*, int64_t);
  const auto theirs_decode = lib.symbol<Dequantize>(decoder);
  EXPECT_NE(theirs_decode, nullptr) << decoder;
  if (!theirs_decode) return 0;
  std::vector<float> ours(static_cast<std::size_t>(n)), reference(ours.size()),
      expected(ours.size());
  theirs_decode(bytes.data(), expected.data(), n);
  ggml_dequantize_row(t, bytes.data(), n, ours.data());
  ggml_dequantize_row_reference(t, bytes.data(), n, reference.data());
  int64_t nonzero = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    if (ours[i] != expected[i] || reference[i] != expected[i]) {
      ADD_FAILURE() << ggml_type_name(t) << " element " << i << ": ours " << ours[i]
                    << ", reference " << reference[i] << ", llama.cpp " << expected[i];
      return nonzero;
    }
    nonzero += expected[i] != 0.0f;
  }
  return nonzero;
}

#define LORA_REQUIRE_LIBGGML()                                                                 \
  LORA_REQUIRE_LLAMA_CPP();                                                                    \
  if (!std::filesystem::exists(libggml_base()))                                                \
    LORA_MISSING_REFERENCE("node-llama-cpp's libggml-base.so for linux-x64 is not installed"); \
  const LibGgml lib;                                                                           \
  ASSERT_NE(lib.handle, nullptr) << dlerror();                                                 \
  const auto quantize_chunk = lib.symbol<QuantizeChunk>("ggml_quantize_chunk");                \
  ASSERT_NE(quantize_chunk, nullptr)

TEST(GgufKQuantEncoder, ErrorAgainstLlamaCppsQuantizer) {
  LORA_REQUIRE_LIBGGML();
  const int64_t rows = 32, cols = 4096;
  const std::vector<float> x = gaussian_rows(rows, cols, 7);
  // Our error / llama.cpp's on this data: 1.0056 (Q2_K), 1 (Q3_K, all 512 blocks alike), 1.0059
  // (Q4_K), 1.0024 (Q5_K), 1.00002 (Q6_K), with 85, 47, 103 and 510 of 512 blocks byte for byte
  // alike; before the search (each sub-block fitted by its range alone) the ratios
  // were 1.099, 1.058 and 1.058.
  const std::pair<GgmlType, double> kinds[] = {{GgmlType::Q2_K, 1.02},
                                               {GgmlType::Q3_K, 1.01},
                                               {GgmlType::Q4_K, 1.02},
                                               {GgmlType::Q5_K, 1.02},
                                               {GgmlType::Q6_K, 1.01}};
  for (const auto& [t, bound] : kinds) {
    const auto [mine, theirs] = encode_both(quantize_chunk, t, x, rows, cols);
    std::size_t same_blocks = 0;
    const auto bb = static_cast<std::size_t>(ggml_block_bytes(t));
    for (std::size_t b = 0; b < mine.size(); b += bb)
      same_blocks += std::equal(mine.begin() + b, mine.begin() + b + bb, theirs.begin() + b);
    std::cout << ggml_type_name(t) << ": " << same_blocks << " of " << mine.size() / bb
              << " blocks byte for byte llama.cpp's\n";
    const double e_mine = rms_error(t, mine, x, rows, cols),
                 e_theirs = rms_error(t, theirs, x, rows, cols);
    std::cout << ggml_type_name(t) << ": rms error ours " << e_mine << ", llama.cpp's " << e_theirs
              << " (ratio " << e_mine / e_theirs << ")\n";
    EXPECT_LT(e_mine, bound * e_theirs) << ggml_type_name(t);
    // Q3_K's search has no float ties to break differently: every block is llama.cpp's.
    if (t == GgmlType::Q3_K) {
      EXPECT_EQ(same_blocks, mine.size() / bb);
    }
    EXPECT_GT(e_mine, 0.5 * e_theirs) << ggml_type_name(t);  // the comparison is live
  }
}

// IQ4_NL and IQ4_XS: llama-quantize's bytes (ggml_quantize_chunk without an importance matrix) on
// Gaussian rows with a zero block, a block of one value and a tiny block among them; and on random
// bytes, our decoders (the dispatched one and the per-element reference) give its decoder's floats.
TEST(GgufKQuantEncoder, Iq4TypesAreLlamaCppsBytesAndFloats) {
  LORA_REQUIRE_LIBGGML();
  const std::pair<GgmlType, const char*> kinds[] = {{GgmlType::IQ4_NL, "dequantize_row_iq4_nl"},
                                                    {GgmlType::IQ4_XS, "dequantize_row_iq4_xs"}};
  const int64_t rows = 16, cols = 2048;
  std::vector<float> x = gaussian_rows(rows, cols, 11);
  std::fill_n(x.begin() + 256, 256, 0.0f);
  std::fill_n(x.begin() + 512 + 32, 32, -0.75f);
  for (int j = 0; j < 32; ++j) x[1024 + j] *= 1e-9f;
  for (const auto& [t, decoder_name] : kinds) {
    SCOPED_TRACE(std::string(ggml_type_name(t)));
    const auto [mine, theirs] = encode_both(quantize_chunk, t, x, rows, cols);
    const auto bb = static_cast<std::size_t>(ggml_block_bytes(t));
    for (std::size_t b = 0; b < mine.size(); b += bb)
      ASSERT_TRUE(std::equal(mine.begin() + b, mine.begin() + b + bb, theirs.begin() + b))
          << "block " << b / bb << " differs from llama.cpp's";
    expect_llama_cpps_floats(lib, t, decoder_name, test::random_ggml_bytes(t, rows, cols, 5),
                             rows * cols);
  }
}

// The types we read but do not write (the codebook types IQ1_S to IQ3_S, the ternary TQ1_0 and
// TQ2_0, MXFP4): on random blocks, our dispatched decoder and our per-element reference give
// exactly llama.cpp's dequantize_row floats.
TEST(GgufKQuantEncoder, ReadOnlyTypesDecodeToLlamaCppsFloats) {
  LORA_REQUIRE_LIBGGML();
  const std::pair<GgmlType, const char*> kinds[] = {
      {GgmlType::IQ2_XXS, "dequantize_row_iq2_xxs"}, {GgmlType::IQ2_XS, "dequantize_row_iq2_xs"},
      {GgmlType::IQ2_S, "dequantize_row_iq2_s"},     {GgmlType::IQ3_XXS, "dequantize_row_iq3_xxs"},
      {GgmlType::IQ3_S, "dequantize_row_iq3_s"},     {GgmlType::IQ1_S, "dequantize_row_iq1_s"},
      {GgmlType::IQ1_M, "dequantize_row_iq1_m"},     {GgmlType::TQ1_0, "dequantize_row_tq1_0"},
      {GgmlType::TQ2_0, "dequantize_row_tq2_0"},     {GgmlType::MXFP4, "dequantize_row_mxfp4"}};
  const int64_t rows = 8, cols = 4096;  // 128 blocks of 256: every codebook entry index is drawn
  for (const auto& [t, decoder_name] : kinds) {
    EXPECT_FALSE(ggml_type_writable(t)) << ggml_type_name(t);
    const int64_t nonzero = expect_llama_cpps_floats(
        lib, t, decoder_name, test::random_ggml_bytes(t, rows, cols, 21), rows * cols);
    EXPECT_GT(nonzero, rows * cols / 4) << ggml_type_name(t);  // the scales are live
  }
}

}  // namespace
}  // namespace lora
