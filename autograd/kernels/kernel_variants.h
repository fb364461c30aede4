// The per-instruction-set copies of the vector kernels, each namespace compiled in its own
// translation unit with that set's flags (autograd/CMakeLists.txt). Call a copy only when
// active_cpu_features() allows its set: kernels_dispatch.cpp and matmul_bf16.cpp pick them once
// per process; the tests call each copy the machine has on the same inputs.
#pragma once
#include <cstdint>

namespace lora::kernels {

// The LoRA rank-r loops (kernels/lora_loops.h) on one thread, with caller-provided scratch; W is
// the lanes of the copy. kernels/lora_kernels.cpp threads them and owns every buffer.
struct LoraLoops {
  int64_t lanes;
  // out[i * r + k] = scale * X[i, :width] . M[k, :width] for i < rows, k < r; `part` holds
  // rows * r * lanes floats.
  void (*rank_dots)(const float* X, int64_t ldx, int64_t rows, const float* M, int64_t width,
                    int64_t r, float scale, float* out, float* part);
  // acc[k * cols + c] += sum_i coef[i * r + k] * X[i * ldx + c] for k < r, c < cols.
  void (*accumulate_outer)(const float* coef, int64_t r, const float* X, int64_t ldx, int64_t rows,
                           int64_t cols, float* acc);
  // out[i * width + c] += scale * sum_k coef[i * r + k] * M[k * width + c] for i < rows.
  void (*rank_expand_rows)(const float* coef, int64_t rows, const float* M, int64_t width,
                           int64_t r, float scale, float* out);
};

// The softmax loops (kernels_exp.h), the f32 SwiGLU (kernels_activation.h) and the LoRA loops in
// AVX2+FMA.
namespace avx2 {
float max_of(const float* x, int64_t n);
double exp_shift_sum(float* x, int64_t n, float shift);
void swiglu_forward(const float* gate, const float* up, int64_t n, float* y);
void swiglu_backward(const float* gate, const float* up, const float* g, int64_t n, float* dgate,
                     float* dup, bool accumulate);
const LoraLoops& lora_loops();
}  // namespace avx2

// The same in AVX-512 (F, BW, VL, DQ).
namespace avx512 {
float max_of(const float* x, int64_t n);
double exp_shift_sum(float* x, int64_t n, float shift);
void swiglu_forward(const float* gate, const float* up, int64_t n, float* y);
void swiglu_backward(const float* gate, const float* up, const float* g, int64_t n, float* dgate,
                     float* dup, bool accumulate);
const LoraLoops& lora_loops();
}  // namespace avx512

// f32 -> bf16 (round to nearest even) with the AVX512-BF16 conversion; one thread.
namespace avx512bf16 {
void round_to_bf16(const float* in, int64_t n, uint16_t* out);
}

}  // namespace lora::kernels
