// RMSNorm kernels, templated on the activation type so the tests can run them in double
// precision against finite differences. The weight is frozen and always f32.
#pragma once
#include <cmath>
#include <cstdint>

#include "autograd/parallel.h"

namespace lora::kernels {

// y = x * inv_rms * w per row of `dim` elements; inv_rms[row] = 1 / sqrt(mean(x^2) + eps) is kept
// for the backward pass. Sums run in double so the f32 result is as close to exact as f32 allows;
// in vector lanes (a single chain of dependent double adds made the norms 4% of a training step).
template <typename T>
void rmsnorm_forward(const T* x, const float* w, int64_t rows, int64_t dim, float eps, T* y,
                     T* inv_rms) {
  parallel_for(rows, rows * dim > (1 << 16), [&](int64_t r) {
    const T* xr = x + r * dim;
    double ss = 0.0;
#pragma omp simd reduction(+ : ss)
    for (int64_t i = 0; i < dim; ++i) ss += double(xr[i]) * double(xr[i]);
    const T inv = T(1.0 / std::sqrt(T(ss / double(dim)) + T(eps)));
    inv_rms[r] = inv;
    T* yr = y + r * dim;
    // Element-wise, so vector lanes are safe; without the pragma -O2 left this loop scalar.
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) yr[i] = T(xr[i] * inv) * T(w[i]);
  });
}

// dx += inv * (w*g) - x * inv^3 / dim * sum(w*g*x), the derivative of the forward above.
template <typename T>
void rmsnorm_backward(const T* x, const float* w, const T* inv_rms, const T* g, int64_t rows,
                      int64_t dim, T* dx) {
  parallel_for(rows, rows * dim > (1 << 16), [&](int64_t r) {
    const T* xr = x + r * dim;
    const T* gr = g + r * dim;
    // A local copy: the simd reduction's scratch clobbers memory, so a pointer read through the
    // capture in the loop is reloaded every iteration and the loop is left scalar.
    const float* wr = w;
    const int64_t width = dim;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int64_t i = 0; i < width; ++i) dot += double(gr[i]) * double(wr[i]) * double(xr[i]);
    const T inv = inv_rms[r];
    const T coef = T(dot / double(dim)) * inv * inv * inv;
    T* dxr = dx + r * dim;
#pragma omp simd
    for (int64_t i = 0; i < dim; ++i) dxr[i] += inv * gr[i] * T(w[i]) - xr[i] * coef;
  });
}

}  // namespace lora::kernels
