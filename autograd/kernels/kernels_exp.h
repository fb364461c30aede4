// The softmax loops (the fused loss head evaluates vocab-many exps per token, which scalar
// std::exp would make as costly as the head's matmul), vectorized with a polynomial exp: relative
// error below 3e-7 on the range softmax uses (x <= 0), and exp(-inf) is 0. The AVX2 or AVX-512
// copy (kernel_variants.h) is picked once per process from active_cpu_features().
#pragma once
#include <cstdint>

namespace lora::kernels {

// max(x[0..n)), -inf for n == 0.
float max_of(const float* x, int64_t n);

// x[i] = exp(x[i] - shift) in place; returns the sum of the results (accumulated in f32 lanes,
// then in double).
double exp_shift_sum(float* x, int64_t n, float shift);

}  // namespace lora::kernels
