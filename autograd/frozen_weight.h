// A frozen base matrix [rows = out, cols = in] in the storage it was loaded with, and the two
// products training needs from it. It has no gradient: only dX flows through it.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "autograd/gguf_quant.h"
#include "autograd/quant.h"

namespace lora {

// Ggml: a GGUF tensor's own blocks (Q4_K, Q8_0, F16, ...), widened tile by tile like Quantized.
enum class WeightFormat { F32, BF16, Quantized, Ggml };

// The precision of the frozen products. BF16 rounds both operands to bf16 and accumulates in f32
// on the CPU's bf16 units (AMX / AVX512-BF16); where the CPU has none it runs as F32, since an
// emulated bf16 product would be slower than sgemm.
enum class ComputeDType { F32, BF16 };
// Whether `requested` runs as bf16 on this CPU.
bool uses_bf16(ComputeDType requested);
// "f32" or "bf16" (the --compute-dtype values); anything else throws std::invalid_argument.
ComputeDType compute_dtype_named(const std::string& name);

// The activations a decode step's 4-bit products read (a few tokens, frozen_gemv): f32, or rounded
// to int8 per group of the weight's (a scale per group, as llama.cpp rounds them for its quantized
// types) so that the products run on integer multiply-adds. Int8 applies to MLX 4-bit weights with
// groups of 32, 64 or 128, and, where the CPU has AVX2, to the ggml blocks Q4_0, Q4_1, Q5_0, Q5_1,
// Q8_0, Q2_K to Q6_K, IQ4_NL, IQ4_XS, MXFP4, IQ1_S to IQ3_S, TQ1_0 and TQ2_0 (x rounded per 32
// elements); every other product stays f32.
enum class GemvActivations { F32, Int8 };
// "f32" or "int8" (the --decode-activations values); anything else throws std::invalid_argument.
GemvActivations gemv_activations_named(const std::string& name);

struct FrozenWeight {
  int64_t rows = 0;
  int64_t cols = 0;
  WeightFormat format = WeightFormat::F32;
  std::vector<float> f32;      // format F32: rows * cols
  std::vector<uint16_t> bf16;  // format BF16: rows * cols
  QuantizedMatrix quant;       // format Quantized
  GgmlMatrix ggml;             // format Ggml

  static FrozenWeight from_f32(std::vector<float> w, int64_t rows, int64_t cols);
  static FrozenWeight from_bf16(std::vector<uint16_t> w, int64_t rows, int64_t cols);
  static FrozenWeight from_quantized(QuantizedMatrix q);
  static FrozenWeight from_ggml(GgmlMatrix m);

  // The bytes the weight takes in memory (what a product reads).
  std::size_t stored_bytes() const;
  // Rows [begin, end) as f32, [end - begin, cols].
  void rows_f32(int64_t begin, int64_t end, float* out) const;
  // Rows [begin, end) rounded to bf16 (bit patterns), [end - begin, cols], each row `ld` values
  // after the previous one in out (0: cols).
  void rows_bf16(int64_t begin, int64_t end, uint16_t* out, int64_t ld = 0) const;
  std::vector<float> to_f32() const;
};

// A low-rank term added to the weight for one product: W + scale * B A, with B [rows, rank] and
// A [rank, cols] row-major. Training folds the LoRA branches into the widened f32 tile this way,
// so the full-width passes of the rank-r products over y and dx disappear into the big sgemm.
struct LowRankDelta {
  const float* A = nullptr;
  const float* B = nullptr;
  int64_t rank = 0;
  float scale = 1.0f;
};

// A low-rank term that a bf16 product carries as extra inner columns, for bf16 compute where a
// LowRankDelta cannot go: the rank-r product joins the frozen one in the same GEMM, so it never
// reads and writes the output on its own. Both its operands are rounded to bf16, as the frozen
// ones are. For y = x W^T it adds scale * coef B^T (coef [n, rank], e.g. x A^T; factor = B
// [rows, rank]); for dx = g W it adds scale * coef A (coef [n, rank], e.g. g B; factor = A
// [rank, cols]).
struct LowRankSide {
  const float* coef = nullptr;
  const float* factor = nullptr;
  int64_t rank = 0;
  float scale = 1.0f;
};

// y[n, rows] = x[n, cols] * (W + deltas)^T + sides + beta * y. Quantized and bf16 weights are
// widened tile by tile, never whole. Deltas need the f32 path: with bf16 compute they are rejected,
// since rounding W + scale*BA to bf16 would bury the small adapter term under the weight's
// rounding. Sides need bf16 compute.
// `activations` applies where the product runs as a decode step's (a few tokens, no deltas, f32).
void frozen_matmul(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta = 0.0f,
                   ComputeDType compute = ComputeDType::F32,
                   std::span<const LowRankDelta> deltas = {},
                   std::span<const LowRankSide> sides = {},
                   GemvActivations activations = GemvActivations::F32);
// dx[n, cols] = g[n, rows] * (W + deltas) + sides + beta * dx.
void frozen_matmul_input_grad(const FrozenWeight& w, const float* g, int64_t n, float* dx,
                              float beta = 0.0f, ComputeDType compute = ComputeDType::F32,
                              std::span<const LowRankDelta> deltas = {},
                              std::span<const LowRankSide> sides = {});

}  // namespace lora
