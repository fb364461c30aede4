// DoRA (weight-decomposed low-rank adaptation) on a frozen linear, as PEFT computes it. The adapted
// weight is W' = m * V / ||V|| with V = W + scale * B A, the norm taken per output row over the
// input dimension and m [out] a trained magnitude (initialized to the base rows' norms, so that
// W' = W before training). With x' = dropout(x):
//   y = x W^T + bias + (g - 1) * (x' W^T) + g * scale * x' A^T B^T,   g = m / ||V||  (per column)
// which without dropout is g * (x V^T) + bias. ||V|| is treated as a constant in backward: no
// gradient flows through the norm (the DoRA paper, section 4.3, and PEFT detach it), so m, A and
// B get their gradients through g's numerator and the low-rank branch only.
#pragma once
#include <vector>

#include "autograd/ops.h"

namespace lora::ag {

// ||W_j + scale * (B A)_j|| for every row j of w. A quantized or bf16 base is widened tile by
// tile (a quantized row's norm comes from its dequantized values); the sums run in double.
std::vector<float> weight_row_norms(const FrozenWeight& w, const LowRankDelta& delta);

// The adapted weight m * V / ||V|| of `rows` rows, V = W + scale * B A with W [rows, cols],
// B [rows, rank] and A [rank, cols] row-major and m [rows]: each row formed, normed and scaled in
// double and rounded to f32 once (the exact weight to half an f32 ulp). `out` may be `w`. A merge
// stores these rows, and inference multiplies by them, so the two agree to the f32 products.
void dora_adapted_rows(const float* w, int64_t rows, int64_t cols, const float* b, const float* a,
                       int64_t rank, double scale, const float* m, float* out);

// The DoRA linear above: x [n, in] -> [n, out]. `magnitude` holds m [out]; the branch gives A, B,
// scale and dropout. A branch that is not trainable runs forward only (runtime adapters); with
// `residual` the op returns residual + y (the o and down projections' residual connection).
Var dora_linear(Tape& tape, Var x, const FrozenWeight& w, const std::vector<float>* bias,
                const LoraBranch& branch, Parameter& magnitude, Var residual = nullptr);

}  // namespace lora::ag
