// SwiGLU: y = silu(gate) * up, silu(g) = g * sigmoid(g).
#pragma once
#include <cmath>
#include <cstdint>

namespace lora::kernels {

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

template <typename T>
void swiglu_forward(const T* gate, const T* up, int64_t n, T* y) {
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) y[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

// d gate += g * up * silu'(gate), silu'(x) = s * (1 + x * (1 - s)); d up += g * silu(gate).
// Either output may be null when that input needs no gradient.
template <typename T>
void swiglu_backward(const T* gate, const T* up, const T* g, int64_t n, T* dgate, T* dup) {
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid(gate[i]);
    if (dgate) dgate[i] += g[i] * up[i] * s * (T(1) + gate[i] * (T(1) - s));
    if (dup) dup[i] += g[i] * gate[i] * s;
  }
}

}  // namespace lora::kernels
