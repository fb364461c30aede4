// rmsnorm over the last `dim` features (a whole row, or each head for q/k norm).
#include <stdexcept>

#include "autograd/kernels/kernels_norm.h"
#include "autograd/ops.h"

namespace lora::ag {
namespace {

// The groups of `dim` features in x; throws when the weight or x does not fit.
int64_t norm_rows(const Tensor& x, std::size_t weight_size, int64_t dim) {
  if (dim <= 0 || static_cast<int64_t>(weight_size) != dim || x.numel() % dim != 0)
    throw std::invalid_argument("rmsnorm: input " + x.shape_str() + " with a weight of " +
                                std::to_string(weight_size) + " over groups of " +
                                std::to_string(dim));
  return x.numel() / dim;
}

}  // namespace

Var rmsnorm(Tape& tape, Var x, std::span<const float> weight, int64_t dim, float eps) {
  const OpTimer timer(tape.profile(), "rmsnorm", tape.forward_phase());
  const Tensor& xv = x->value;
  const int64_t rows = norm_rows(xv, weight.size(), dim);
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

Var rmsnorm(Tape& tape, Var x, Parameter& weight, int64_t dim, float eps, bool trains) {
  if (!trains) return rmsnorm(tape, x, weight.value.span(), dim, eps);
  const OpTimer timer(tape.profile(), "rmsnorm", tape.forward_phase());
  const Tensor& xv = x->value;
  const int64_t rows = norm_rows(xv, weight.value.data.size(), dim);
  Tensor y(xv.shape);
  std::vector<float> inv_rms(static_cast<std::size_t>(rows));
  kernels::rmsnorm_forward(xv.ptr(), weight.value.ptr(), rows, dim, eps, y.ptr(), inv_rms.data());
  Var out = tape.make(std::move(y), true);
  tape.push_backward(
      [&tape, x, out, &weight, dim, rows, inv_rms = std::move(inv_rms)] {
        if (out->grad.data.empty()) return;
        const float* xs = x->value.ptr();
        const float* g = out->grad.ptr();
        // dw_j = sum over groups of g_j * x_j * inv_rms, summed in double per feature.
        std::vector<double> dw(static_cast<std::size_t>(dim), 0.0);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < dim; ++j)
            dw[j] += double(g[r * dim + j]) * double(xs[r * dim + j]) * double(inv_rms[r]);
        weight.ensure_grad();
        for (int64_t j = 0; j < dim; ++j) weight.grad.data[j] += float(dw[j]);
        if (x->requires_grad)
          kernels::rmsnorm_backward(xs, weight.value.ptr(), inv_rms.data(), g, rows, dim,
                                    tape.grad(x).ptr());
      },
      "rmsnorm", out, {x});
  return out;
}

}  // namespace lora::ag
