// The per-instruction-set copies of the vector kernels, each namespace compiled in its own
// translation unit with that set's flags (autograd/CMakeLists.txt). Call a copy only when
// active_cpu_features() allows its set: kernels_dispatch.cpp and matmul_bf16.cpp pick them once
// per process; the tests call each copy the machine has on the same inputs.
#pragma once
#include <cstdint>

namespace lora::kernels {

// The softmax loops (kernels_exp.h) and the f32 SwiGLU (kernels_activation.h) in AVX2+FMA.
namespace avx2 {
float max_of(const float* x, int64_t n);
double exp_shift_sum(float* x, int64_t n, float shift);
void swiglu_forward(const float* gate, const float* up, int64_t n, float* y);
void swiglu_backward(const float* gate, const float* up, const float* g, int64_t n, float* dgate,
                     float* dup, bool accumulate);
}  // namespace avx2

// The same in AVX-512 (F, BW, VL, DQ).
namespace avx512 {
float max_of(const float* x, int64_t n);
double exp_shift_sum(float* x, int64_t n, float shift);
void swiglu_forward(const float* gate, const float* up, int64_t n, float* y);
void swiglu_backward(const float* gate, const float* up, const float* g, int64_t n, float* dgate,
                     float* dup, bool accumulate);
}  // namespace avx512

// f32 -> bf16 (round to nearest even) with the AVX512-BF16 conversion; one thread.
namespace avx512bf16 {
void round_to_bf16(const float* in, int64_t n, uint16_t* out);
}

}  // namespace lora::kernels
