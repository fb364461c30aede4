// rmsnorm over the last `dim` features (a whole row, or each head for q/k norm).
#include <stdexcept>

#include "autograd/kernels/kernels_norm.h"
#include "autograd/ops.h"

namespace lora::ag {

Var rmsnorm(Tape& tape, Var x, std::span<const float> weight, int64_t dim, float eps) {
  const OpTimer timer(tape.profile(), "rmsnorm", tape.forward_phase());
  const Tensor& xv = x->value;
  if (dim <= 0 || static_cast<int64_t>(weight.size()) != dim || xv.numel() % dim != 0)
    throw std::invalid_argument("rmsnorm: input " + xv.shape_str() + " with a weight of " +
                                std::to_string(weight.size()) + " over groups of " +
                                std::to_string(dim));
  const int64_t rows = xv.numel() / dim;
  Tensor y(xv.shape);
  std::vector<float> inv_rms(static_cast<std::size_t>(rows));
  kernels::rmsnorm_forward(xv.ptr(), weight.data(), rows, dim, eps, y.ptr(), inv_rms.data());
  Var out = tape.make(std::move(y), x->requires_grad);
  if (!out->requires_grad) return out;
  tape.push_backward(
      [&tape, x, out, weight, dim, rows, inv_rms = std::move(inv_rms)] {
        if (out->grad.data.empty()) return;
        kernels::rmsnorm_backward(x->value.ptr(), weight.data(), inv_rms.data(), out->grad.ptr(),
                                  rows, dim, tape.grad(x).ptr());
      },
      "rmsnorm", out, {x});
  return out;
}

}  // namespace lora::ag
