// dense_linear: x W^T (+ b) through a trainable f32 weight (full fine-tuning), with the weight's
// and the bias's gradients.
#include <cblas.h>

#include <stdexcept>

#include "autograd/ops.h"

namespace lora::ag {
namespace {

void check_dense(const Tensor& x, const Parameter& w, const Parameter* bias, Var residual) {
  const Tensor& wv = w.value;
  if (wv.rank() != 2 || x.rank() != 2 || x.dim(1) != wv.dim(1))
    throw std::invalid_argument("dense_linear: input " + x.shape_str() + " does not fit a weight " +
                                wv.shape_str());
  if (bias && bias->value.numel() != wv.dim(0))
    throw std::invalid_argument("dense_linear: bias " + bias->value.shape_str() + " for " +
                                std::to_string(wv.dim(0)) + " outputs");
  if (residual && residual->value.shape != std::vector<int64_t>{x.dim(0), wv.dim(0)})
    throw std::invalid_argument("dense_linear: residual " + residual->value.shape_str() +
                                " does not fit an output of [" + std::to_string(x.dim(0)) + ", " +
                                std::to_string(wv.dim(0)) + "]");
}

}  // namespace

Var dense_linear(Tape& tape, Var x, Parameter& w, Parameter* bias, bool trains, Var residual) {
  const OpTimer timer(tape.profile(), "linear", tape.forward_phase());
  const Tensor& xv = x->value;
  check_dense(xv, w, bias, residual);
  const int64_t n = xv.dim(0), in = w.value.dim(1), out = w.value.dim(0);
  Tensor y = residual ? residual->value : Tensor({n, out});
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(out), int(in), 1.0f, xv.ptr(),
              int(in), w.value.ptr(), int(in), residual ? 1.0f : 0.0f, y.ptr(), int(out));
  if (bias)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) y.data[i * out + o] += bias->value.data[o];
  const bool residual_grad = residual && residual->requires_grad;
  Var result = tape.make(std::move(y), x->requires_grad || trains || residual_grad);
  if (!result->requires_grad) return result;
  auto backward = [&tape, x, &w, bias, trains, result,
                   residual = residual_grad ? residual : nullptr] {
    if (result->grad.data.empty()) return;
    const float* g = result->grad.ptr();
    const int64_t n = result->grad.dim(0), in = w.value.dim(1), out = w.value.dim(0);
    if (residual) tape.accumulate_grad(residual, g);
    if (trains) {
      // dW += g^T x [out, in]; db += the column sums of g.
      w.ensure_grad();
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(out), int(in), int(n), 1.0f, g,
                  int(out), x->value.ptr(), int(in), 1.0f, w.grad.ptr(), int(in));
      if (bias) {
        bias->ensure_grad();
        for (int64_t i = 0; i < n; ++i)
          for (int64_t o = 0; o < out; ++o) bias->grad.data[o] += g[i * out + o];
      }
    }
    if (!x->requires_grad) return;
    // dx += g W [n, in].
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(in), int(out), 1.0f, g,
                int(out), w.value.ptr(), int(in), 1.0f, tape.grad(x).ptr(), int(in));
  };
  if (trains)
    tape.push_backward(std::move(backward), "linear", result, {x});
  else
    tape.push_backward(std::move(backward), "linear", result);
  return result;
}

}  // namespace lora::ag
