// Products of a frozen weight with a few vectors (generation's decode: one token at a time). At
// batch 1 the product reads every weight once and does two flops per weight, so its speed is the
// memory's: the kernels read each packed weight once, straight from its storage (MLX 4/8-bit
// codes; Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K to Q6_K blocks, the types of llama.cpp's K-quant
// files; IQ4_NL, IQ4_XS and MXFP4 where the CPU has AVX2; f32), with no widened copy of the matrix,
// and split the output rows over threads. Other storages (F16, BF16) widen 16 rows at a time into a
// buffer.
#pragma once
#include <cstdint>
#include <span>
#include <string_view>

#include "autograd/frozen_weight.h"

namespace lora {

// The instruction sets the kernels are compiled for, each a superset of those before it; each is
// used only where the CPU has it. Avx512Vnni is Avx512 with the int8 kernels' byte dots in
// AVX512-VNNI: the same results, fewer instructions.
enum class GemvIsa { Scalar, Avx2, Avx512, Avx512Vnni };

// The kernel set this CPU runs: the one place that decides (CPU features read once).
GemvIsa gemv_isa();
std::string_view gemv_isa_name(GemvIsa isa);  // "avx512_vnni", "avx512", "avx2", "scalar"
// Whether this CPU can run `isa`'s kernels (tests run every variant the machine has).
bool gemv_isa_supported(GemvIsa isa);

// The most vectors for which the matrix-vector kernels beat widening tiles for sgemm.
inline constexpr int64_t kGemvMaxTokens = 8;

// y[n, rows] = x[n, cols] W^T + beta * y, with the kernels of `isa` (gemv_isa() by default).
void frozen_gemv(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta = 0.0f);
void frozen_gemv(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta,
                 GemvIsa isa);

// The most tokens for which frozen_short_gemm beats widening tiles for sgemm (a prompt's tokens).
inline constexpr int64_t kShortGemmMaxTokens = 64;

// y[n, rows] = x[n, cols] W^T + beta * y for a few dozen tokens (a prompt): each thread widens a
// block of rows at a time into a buffer its cache holds and multiplies it with every token there,
// x transposed once and taken a chunk of columns at a time; sgemm would instead repack the whole
// widened weight, which is most of its time at this size.
void frozen_short_gemm(const FrozenWeight& w, const float* x, int64_t n, float* y,
                       float beta = 0.0f);
void frozen_short_gemm(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta,
                       GemvIsa isa);

// One of several products of the same x: y[n, w->rows] = x W^T + beta * y.
struct GemvProduct {
  const FrozenWeight* w = nullptr;
  float* y = nullptr;
  float beta = 0.0f;
};
// Several products of one x (a decode step's q, k and v; gate and up) in one pass of the thread
// team: one fork and join instead of one each (on two threads, about 2 us: as long as a
// SmolLM2-135M k projection's own reading), and x prepared once. Every weight must have x's width.
// `activations` Int8 rounds x to int8 for the products that take it (GemvActivations).
void frozen_gemv(std::span<const GemvProduct> products, const float* x, int64_t n,
                 GemvActivations activations = GemvActivations::F32);
void frozen_gemv(std::span<const GemvProduct> products, const float* x, int64_t n, GemvIsa isa,
                 GemvActivations activations = GemvActivations::F32);

}  // namespace lora
