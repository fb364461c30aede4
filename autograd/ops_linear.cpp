// linear: x W^T (+ bias) through a frozen weight, plus LoRA branches computed rank first.
#include <cblas.h>

#include <cstring>
#include <stdexcept>

#include "autograd/dropout.h"
#include "autograd/ops.h"

namespace lora::ag {
namespace {

void check_branch(const LoraBranch& br, const FrozenWeight& w) {
  if (!br.A || !br.B) throw std::invalid_argument("linear: LoRA branch without A or B");
  const auto& a = br.A->value;
  const auto& b = br.B->value;
  if (a.rank() != 2 || b.rank() != 2 || a.dim(1) != w.cols || b.dim(0) != w.rows ||
      a.dim(0) != b.dim(1))
    throw std::invalid_argument("linear: LoRA shapes A " + a.shape_str() + ", B " + b.shape_str() +
                                " do not fit a [" + std::to_string(w.rows) + ", " +
                                std::to_string(w.cols) + "] weight");
}

// The branch input: x itself, or x with the dropout mask applied (a pure function of the seed,
// so backward rebuilds it instead of keeping a copy).
const float* branch_input(const LoraBranch& br, const Tensor& x, std::vector<float>& scratch) {
  if (br.dropout <= 0.0f) return x.ptr();
  scratch.resize(x.data.size());
  apply_dropout(x.span(), br.dropout, br.dropout_seed, scratch);
  return scratch.data();
}

}  // namespace

Var linear(Tape& tape, Var x, const FrozenWeight& w, const std::vector<float>* bias,
           std::span<const LoraBranch> lora) {
  const OpTimer timer(tape.profile(), "linear", tape.forward_phase());
  const Tensor& xv = x->value;
  if (xv.rank() != 2 || xv.dim(1) != w.cols)
    throw std::invalid_argument("linear: input " + xv.shape_str() + " does not fit a weight with " +
                                std::to_string(w.cols) + " input features");
  if (bias && static_cast<int64_t>(bias->size()) != w.rows)
    throw std::invalid_argument("linear: bias of " + std::to_string(bias->size()) + " values for " +
                                std::to_string(w.rows) + " outputs");
  const int64_t n = xv.dim(0), in = w.cols, out = w.rows;
  Tensor y({n, out});
  const ComputeDType compute = tape.compute_dtype();
  frozen_matmul(w, xv.ptr(), n, y.ptr(), 0.0f, compute);
  if (bias)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) y.data[i * out + o] += (*bias)[o];

  // u = dropout(x) A^T [n, r] per branch, kept for dB in backward (small: rank columns).
  std::vector<Tensor> low_rank;
  std::vector<float> scratch;
  bool trains = false;
  const OpTimer lora_timer(lora.empty() ? nullptr : tape.profile(), "lora", tape.forward_phase());
  for (const LoraBranch& br : lora) {
    check_branch(br, w);
    const int64_t r = br.A->value.dim(0);
    Tensor u({n, r});
    const float* xin = branch_input(br, xv, scratch);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(r), int(in), 1.0f, xin,
                int(in), br.A->value.ptr(), int(in), 0.0f, u.ptr(), int(r));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(out), int(r), br.scale,
                u.ptr(), int(r), br.B->value.ptr(), int(r), 1.0f, y.ptr(), int(out));
    low_rank.push_back(std::move(u));
    trains = trains || br.trainable;
  }

  Var result = tape.make(std::move(y), x->requires_grad || trains);
  if (!result->requires_grad) return result;
  std::vector<LoraBranch> branches(lora.begin(), lora.end());
  tape.push_backward(
      [&tape, x, &w, result, compute, branches = std::move(branches),
       low_rank = std::move(low_rank)] {
        if (result->grad.data.empty()) return;
        const float* g = result->grad.ptr();
        const Tensor& xv = x->value;
        const int64_t n = xv.dim(0), in = w.cols, out = w.rows;
        float* dx = x->requires_grad ? tape.grad(x).ptr() : nullptr;
        if (dx) frozen_matmul_input_grad(w, g, n, dx, 1.0f, compute);
        std::vector<float> scratch, gu, dxin;
        const OpTimer lora_timer(branches.empty() ? nullptr : tape.profile(), "lora",
                                 OpPhase::Backward);
        for (std::size_t bi = 0; bi < branches.size(); ++bi) {
          const LoraBranch& br = branches[bi];
          if (!br.trainable && !dx) continue;
          const int64_t r = br.A->value.dim(0);
          // gu = scale * g B  [n, r]
          gu.assign(static_cast<std::size_t>(n * r), 0.0f);
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(r), int(out), br.scale,
                      g, int(out), br.B->value.ptr(), int(r), 0.0f, gu.data(), int(r));
          if (br.trainable) {
            br.A->ensure_grad();
            br.B->ensure_grad();
            // dB += scale * g^T u  [out, r];  dA += gu^T dropout(x)  [r, in]
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(out), int(r), int(n), br.scale,
                        g, int(out), low_rank[bi].ptr(), int(r), 1.0f, br.B->grad.ptr(), int(r));
            const float* xin = branch_input(br, xv, scratch);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(r), int(in), int(n), 1.0f,
                        gu.data(), int(r), xin, int(in), 1.0f, br.A->grad.ptr(), int(in));
          }
          if (!dx) continue;
          if (br.dropout <= 0.0f) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(in), int(r), 1.0f,
                        gu.data(), int(r), br.A->value.ptr(), int(in), 1.0f, dx, int(in));
          } else {
            dxin.assign(static_cast<std::size_t>(n * in), 0.0f);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(in), int(r), 1.0f,
                        gu.data(), int(r), br.A->value.ptr(), int(in), 0.0f, dxin.data(), int(in));
            scratch.resize(dxin.size());
            apply_dropout(dxin, br.dropout, br.dropout_seed, scratch);
            for (std::size_t i = 0; i < scratch.size(); ++i) dx[i] += scratch[i];
          }
        }
      }, "linear", result);
  return result;
}

}  // namespace lora::ag
