// linear: x W^T (+ bias) through a frozen weight, plus LoRA branches computed rank first.
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "autograd/dropout.h"
#include "autograd/kernels/kernels_lora.h"
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

// Folding the branches into the widened f32 weight (W + scale*BA: one sgemm each way) replaces the
// rank-r products that read and write all of y in forward and all of dx in backward. Forming BA
// costs rows * cols * rank per call, so it pays only over many tokens; it needs f32 compute (see
// LowRankDelta) and no dropout (the branch must see x itself).
constexpr int64_t kFoldMinTokens = 256;

bool folds(std::span<const LoraBranch> lora, int64_t n, ComputeDType compute) {
  if (lora.empty() || n < kFoldMinTokens || uses_bf16(compute)) return false;
  return std::all_of(lora.begin(), lora.end(),
                     [](const LoraBranch& br) { return br.dropout <= 0.0f; });
}

std::vector<LowRankDelta> deltas_of(std::span<const LoraBranch> lora) {
  std::vector<LowRankDelta> deltas;
  for (const LoraBranch& br : lora)
    deltas.push_back({br.A->value.ptr(), br.B->value.ptr(), br.A->value.dim(0), br.scale});
  return deltas;
}

}  // namespace

Var linear(Tape& tape, Var x, const FrozenWeight& w, const std::vector<float>* bias,
           std::span<const LoraBranch> lora, Var residual) {
  const OpTimer timer(tape.profile(), "linear", tape.forward_phase());
  const Tensor& xv = x->value;
  if (xv.rank() != 2 || xv.dim(1) != w.cols)
    throw std::invalid_argument("linear: input " + xv.shape_str() + " does not fit a weight with " +
                                std::to_string(w.cols) + " input features");
  if (bias && static_cast<int64_t>(bias->size()) != w.rows)
    throw std::invalid_argument("linear: bias of " + std::to_string(bias->size()) + " values for " +
                                std::to_string(w.rows) + " outputs");
  const int64_t n = xv.dim(0), in = w.cols, out = w.rows;
  for (const LoraBranch& br : lora) check_branch(br, w);
  if (residual && residual->value.shape != std::vector<int64_t>{n, out})
    throw std::invalid_argument("linear: residual " + residual->value.shape_str() +
                                " does not fit an output of [" + std::to_string(n) + ", " +
                                std::to_string(out) + "]");
  Tensor y = residual ? residual->value : Tensor({n, out});
  const ComputeDType compute = tape.compute_dtype();
  const bool fold = folds(lora, n, compute);
  frozen_matmul(w, xv.ptr(), n, y.ptr(), residual ? 1.0f : 0.0f, compute,
                fold ? deltas_of(lora) : std::vector<LowRankDelta>{});
  if (bias)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) y.data[i * out + o] += (*bias)[o];

  // u = dropout(x) A^T [n, r] per branch, kept for dB in backward (small: rank columns). A folded
  // branch already sits in y; backward forms its u from the x blocks it reads for dA anyway, so
  // forward makes no pass over x for it.
  std::vector<Tensor> low_rank;
  std::vector<float> scratch;
  bool trains = false;
  const OpTimer lora_timer(lora.empty() || fold ? nullptr : tape.profile(), "lora",
                           tape.forward_phase());
  for (const LoraBranch& br : lora) {
    trains = trains || br.trainable;
    if (fold) {
      low_rank.emplace_back();
      continue;
    }
    const int64_t r = br.A->value.dim(0);
    Tensor u({n, r});
    kernels::rank_project(branch_input(br, xv, scratch), n, br.A->value.ptr(), in, r, 1.0f,
                          u.ptr());
    const std::vector<float> bt = kernels::transposed(br.B->value.ptr(), out, r);
    kernels::rank_expand(u.ptr(), n, bt.data(), out, r, br.scale, y.ptr());
    low_rank.push_back(std::move(u));
  }

  const bool residual_grad = residual && residual->requires_grad;
  Var result = tape.make(std::move(y), x->requires_grad || trains || residual_grad);
  if (!result->requires_grad) return result;
  std::vector<LoraBranch> branches(lora.begin(), lora.end());
  auto backward = [&tape, x, &w, result, compute, fold,
                   residual = residual_grad ? residual : nullptr, branches = std::move(branches),
                   low_rank = std::move(low_rank)] {
    if (result->grad.data.empty()) return;
    const float* g = result->grad.ptr();
    if (residual) tape.accumulate_grad(residual, g);
    const Tensor& xv = x->value;
    const int64_t n = result->grad.dim(0), in = w.cols, out = w.rows;
    // First everything that reads x (the branches' weight gradients), so that dx may then be
    // written over x's value where nothing else reads it.
    std::vector<std::vector<float>> gus(branches.size());  // scale * g B per branch, [n, r]
    {
      std::vector<float> scratch;
      const OpTimer lora_timer(branches.empty() ? nullptr : tape.profile(), "lora",
                               OpPhase::Backward);
      for (std::size_t bi = 0; bi < branches.size(); ++bi) {
        const LoraBranch& br = branches[bi];
        if (!br.trainable && (!x->requires_grad || fold)) continue;
        const int64_t r = br.A->value.dim(0);
        std::vector<float>& gu = gus[bi];
        gu.resize(static_cast<std::size_t>(n * r));
        if (br.trainable) {
          br.A->ensure_grad();
          br.B->ensure_grad();
          kernels::lora_backward(g, branch_input(br, xv, scratch),
                                 fold ? nullptr : low_rank[bi].ptr(), br.A->value.ptr(),
                                 br.B->value.ptr(), n, in, out, r, br.scale, gu.data(),
                                 br.A->grad.ptr(), br.B->grad.ptr());
        } else {
          const std::vector<float> bt = kernels::transposed(br.B->value.ptr(), out, r);
          kernels::rank_project(g, n, bt.data(), out, r, br.scale, gu.data());
        }
      }
    }
    if (!x->requires_grad) return;
    const bool overwrite = tape.value_reusable_as_grad(x);
    float* dx = overwrite ? tape.reuse_value_as_grad(x) : tape.grad(x).ptr();
    frozen_matmul_input_grad(w, g, n, dx, overwrite ? 0.0f : 1.0f, compute,
                             fold ? deltas_of(branches) : std::vector<LowRankDelta>{});
    if (fold) return;
    const OpTimer lora_timer(branches.empty() ? nullptr : tape.profile(), "lora",
                             OpPhase::Backward);
    std::vector<float> dxin, dropped;
    for (std::size_t bi = 0; bi < branches.size(); ++bi) {
      const LoraBranch& br = branches[bi];
      if (gus[bi].empty()) continue;
      const int64_t r = br.A->value.dim(0);
      if (br.dropout <= 0.0f) {
        kernels::rank_expand(gus[bi].data(), n, br.A->value.ptr(), in, r, 1.0f, dx);
      } else {
        dxin.assign(static_cast<std::size_t>(n * in), 0.0f);
        kernels::rank_expand(gus[bi].data(), n, br.A->value.ptr(), in, r, 1.0f, dxin.data());
        dropped.resize(dxin.size());
        apply_dropout(dxin, br.dropout, br.dropout_seed, dropped);
        for (std::size_t i = 0; i < dropped.size(); ++i) dx[i] += dropped[i];
      }
    }
  };
  // x's value is read only for the trainable branches' weight gradients.
  if (trains)
    tape.push_backward(std::move(backward), "linear", result, {x});
  else
    tape.push_backward(std::move(backward), "linear", result);
  return result;
}

}  // namespace lora::ag
