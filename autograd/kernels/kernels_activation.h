// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g). GeGLU: y = gelu_tanh(gate) * up.
#pragma once
#include <cmath>
#include <cstdint>

#include "autograd/parallel.h"

namespace lora::kernels {

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <typename T>
void swiglu_forward(const T* gate, const T* up, int64_t n, T* y) {
  parallel_for(n, n > (1 << 16), [&](int64_t i) { y[i] = gate[i] * sigmoid(gate[i]) * up[i]; });
}

// d gate += g * up * silu'(gate), silu'(x) = s * (1 + x * (1 - s)); d up += g * silu(gate).
// Either output may be null when that input needs no gradient. With accumulate false the outputs
// are overwritten instead, and they may then be the inputs themselves (dgate == gate, dup == up):
// every element is read before it is written.
template <typename T>
inline void swiglu_backward_element(T x, T u, T gi, T* dgate, T* dup, bool accumulate) {
  const T s = sigmoid(x);
  if (dgate) *dgate = (accumulate ? *dgate : T(0)) + gi * u * s * (T(1) + x * (T(1) - s));
  if (dup) *dup = (accumulate ? *dup : T(0)) + gi * x * s;
}

template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* g, int64_t n, T* dgate, T* dup,
                     bool accumulate = true) {
  parallel_for(n, n > (1 << 16), [&](int64_t i) {
    swiglu_backward_element(gate[i], up[i], g[i], dgate ? dgate + i : nullptr,
                            dup ? dup + i : nullptr, accumulate);
  });
}

// GELU with the tanh approximation (PyTorch's approximate="tanh", Gemma's gelu_pytorch_tanh):
// gelu(x) = x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
inline constexpr double kGeluC = 0.7978845608028654;  // sqrt(2 / pi)
inline constexpr double kGeluA = 0.044715;

template <typename T>
inline T gelu_tanh(T x) {
  const T u = T(kGeluC) * (x + T(kGeluA) * x * x * x);
  return T(0.5) * x * (T(1) + std::tanh(u));
}

template <typename T>
void geglu_forward(const T* gate, const T* up, int64_t n, T* y) {
  parallel_for(n, n > (1 << 16), [&](int64_t i) { y[i] = gelu_tanh(gate[i]) * up[i]; });
}

// gelu'(x) = (1 + t)/2 + x/2 (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u). Same
// contract as swiglu_backward (null outputs, accumulate, in place).
template <typename T>
void geglu_backward(const T* gate, const T* up, const T* g, int64_t n, T* dgate, T* dup,
                    bool accumulate = true) {
  parallel_for(n, n > (1 << 16), [&](int64_t i) {
    const T x = gate[i], u = up[i], gi = g[i];
    const T t = std::tanh(T(kGeluC) * (x + T(kGeluA) * x * x * x));
    const T gelu = T(0.5) * x * (T(1) + t);
    const T slope = T(0.5) * (T(1) + t) +
                    T(0.5) * x * (T(1) - t * t) * T(kGeluC) * (T(1) + T(3 * kGeluA) * x * x);
    if (dgate) dgate[i] = (accumulate ? dgate[i] : T(0)) + gi * u * slope;
    if (dup) dup[i] = (accumulate ? dup[i] : T(0)) + gi * gelu;
  });
}

// f32 SwiGLU runs the vectorized copy for the CPU (kernel_variants.h, picked once per process in
// kernels_dispatch.cpp): scalar std::exp made it cost a third of a matmul.
template <>
void swiglu_forward<float>(const float* gate, const float* up, int64_t n, float* y);
template <>
void swiglu_backward<float>(const float* gate, const float* up, const float* g, int64_t n,
                            float* dgate, float* dup, bool accumulate);

}  // namespace lora::kernels
