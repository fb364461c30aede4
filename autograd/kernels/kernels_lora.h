// The rank-r products of a LoRA branch that is not folded into the frozen weight, split over the
// threads by token blocks (a BLAS call with an inner or outer size of r threads poorly). The loops
// are kernels/lora_loops.h, one copy per instruction set, picked once per process from
// active_cpu_features() (kernels/lora_kernels.cpp).
//   rank_project:  out[n, r] = scale * X[n, width] M^T, M [r, width] (u = x A^T, gu = g B)
//   rank_expand:   out[n, width] += scale * coef[n, r] M, M [r, width] (y += s u B^T, dx += gu A)
//   lora_backward: one branch's backward in one pass over the tokens,
//     su  = scale * u          [n, r], u = x A^T (given, or formed from the cached x block)
//     gu  = scale * g B        [n, r]
//     dB += su^T g             [out, r]
//     dA += gu^T x             [r, in]
//   with g [n, out], x (the branch input) [n, in], A [r, in], B [out, r]. A BLAS sgemm per
//   product reads g twice and x once more; here each thread reuses every block of g and x from
//   cache for all of its products. `u` may be null (a folded branch never forms u in forward).
#pragma once
#include <cstdint>
#include <vector>

namespace lora::kernels {

struct LoraLoops;  // kernel_variants.h

void rank_project(const float* X, int64_t n, const float* M, int64_t width, int64_t r, float scale,
                  float* out);
void rank_expand(const float* coef, int64_t n, const float* M, int64_t width, int64_t r,
                 float scale, float* out);
void lora_backward(const float* g, const float* x, const float* u, const float* A, const float* B,
                   int64_t n, int64_t in, int64_t out, int64_t r, float scale, float* gu, float* dA,
                   float* dB, const LoraLoops* loops = nullptr);  // null: the CPU's

// M^T of a row-major [rows, cols] matrix, as [cols, rows] (B [out, r] -> B^T [r, out]).
std::vector<float> transposed(const float* m, int64_t rows, int64_t cols);

}  // namespace lora::kernels
