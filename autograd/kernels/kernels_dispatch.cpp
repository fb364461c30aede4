// The run-time choice between the per-instruction-set copies of the vector kernels: one table per
// kernel family, resolved on first use from active_cpu_features() (LORA_CPU included).
#include "autograd/cpu_features.h"
#include "autograd/kernels/kernel_variants.h"
#include "autograd/kernels/kernels_activation.h"
#include "autograd/kernels/kernels_exp.h"

namespace lora::kernels {
namespace {

struct SoftmaxKernels {
  float (*max_of)(const float*, int64_t);
  double (*exp_shift_sum)(float*, int64_t, float);
};
const SoftmaxKernels& softmax_kernels() {
  static const SoftmaxKernels k = active_cpu_features().avx512
                                      ? SoftmaxKernels{avx512::max_of, avx512::exp_shift_sum}
                                      : SoftmaxKernels{avx2::max_of, avx2::exp_shift_sum};
  return k;
}

struct SwigluKernels {
  void (*forward)(const float*, const float*, int64_t, float*);
  void (*backward)(const float*, const float*, const float*, int64_t, float*, float*, bool);
};
const SwigluKernels& swiglu_kernels() {
  static const SwigluKernels k =
      active_cpu_features().avx512 ? SwigluKernels{avx512::swiglu_forward, avx512::swiglu_backward}
                                   : SwigluKernels{avx2::swiglu_forward, avx2::swiglu_backward};
  return k;
}

}  // namespace

float max_of(const float* x, int64_t n) { return softmax_kernels().max_of(x, n); }

double exp_shift_sum(float* x, int64_t n, float shift) {
  return softmax_kernels().exp_shift_sum(x, n, shift);
}

template <>
void swiglu_forward<float>(const float* gate, const float* up, int64_t n, float* y) {
  swiglu_kernels().forward(gate, up, n, y);
}

template <>
void swiglu_backward<float>(const float* gate, const float* up, const float* g, int64_t n,
                            float* dgate, float* dup, bool accumulate) {
  swiglu_kernels().backward(gate, up, g, n, dgate, dup, accumulate);
}

}  // namespace lora::kernels
