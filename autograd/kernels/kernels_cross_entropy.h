// Softmax cross-entropy of one row of logits, forward and backward, for the fused loss head.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>

namespace lora::kernels {

// log(sum(exp(logits))) with the max subtracted; the sum runs in double.
template <typename T>
double log_sum_exp(const T* logits, int64_t n) {
  T mx = logits[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(logits[i] - mx));
  return double(mx) + std::log(sum);
}

// In place: logits -> coef * (softmax(logits) - onehot(target)), the gradient of
// coef * CE(logits, target) with lse = log_sum_exp(logits).
template <typename T>
void cross_entropy_grad_inplace(T* logits, int64_t n, int32_t target, double lse, T coef) {
  for (int64_t i = 0; i < n; ++i) logits[i] = coef * T(std::exp(double(logits[i]) - lse));
  logits[target] -= coef;
}

}  // namespace lora::kernels
