// linear: x W^T (+ bias) through a frozen weight, plus LoRA branches computed rank first.
#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "autograd/dropout.h"
#include "autograd/frozen_gemv.h"
#include "autograd/kernels/kernels_lora.h"
#include "autograd/ops.h"

namespace lora::ag {
namespace {

bool any_trainable(std::span<const LoraBranch> lora) {
  return std::any_of(lora.begin(), lora.end(), [](const LoraBranch& br) { return br.trainable; });
}

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

// How the branches join the frozen product. Folding them into the widened f32 weight (W +
// scale*BA: one sgemm each way) replaces the rank-r products that read and write all of y in
// forward and all of dx in backward; with bf16 compute, where W + scale*BA cannot be rounded
// without burying the adapter term, each branch rides in the bf16 GEMM's inner dimension instead
// (LowRankSide). Forming BA costs rows * cols * rank per call and a side copies the weight, so
// both pay only over many tokens; and the branch must see x itself (no dropout).
enum class Join { Separate, Fold, Side };
constexpr int64_t kJoinMinTokens = 256;

Join join_of(std::span<const LoraBranch> lora, int64_t n, ComputeDType compute) {
  if (lora.empty() || n < kJoinMinTokens) return Join::Separate;
  if (!std::all_of(lora.begin(), lora.end(),
                   [](const LoraBranch& br) { return br.dropout <= 0.0f; }))
    return Join::Separate;
  return uses_bf16(compute) ? Join::Side : Join::Fold;
}

std::vector<LowRankDelta> deltas_of(std::span<const LoraBranch> lora, Join join) {
  std::vector<LowRankDelta> deltas;
  if (join != Join::Fold) return deltas;
  for (const LoraBranch& br : lora)
    deltas.push_back({br.A->value.ptr(), br.B->value.ptr(), br.A->value.dim(0), br.scale});
  return deltas;
}

// The forward's sides: u = x A^T [n, r] per branch times scale * B.
std::vector<LowRankSide> forward_sides(std::span<const LoraBranch> lora,
                                       std::span<const Tensor> low_rank, Join join) {
  std::vector<LowRankSide> sides;
  if (join != Join::Side) return sides;
  for (std::size_t i = 0; i < lora.size(); ++i)
    sides.push_back(
        {low_rank[i].ptr(), lora[i].B->value.ptr(), lora[i].A->value.dim(0), lora[i].scale});
  return sides;
}

// The input gradient's sides: gu = scale * g B [n, r] per branch times A.
std::vector<LowRankSide> input_grad_sides(std::span<const LoraBranch> lora,
                                          const std::vector<std::vector<float>>& gus, Join join) {
  std::vector<LowRankSide> sides;
  if (join != Join::Side) return sides;
  for (std::size_t i = 0; i < lora.size(); ++i)
    if (!gus[i].empty())
      sides.push_back({gus[i].data(), lora[i].A->value.ptr(), lora[i].A->value.dim(0), 1.0f});
  return sides;
}

void check_linear_inputs(const Tensor& xv, const FrozenWeight& w, const std::vector<float>* bias,
                         std::span<const LoraBranch> lora, const Var& residual) {
  if (xv.rank() != 2 || xv.dim(1) != w.cols)
    throw std::invalid_argument("linear: input " + xv.shape_str() + " does not fit a weight with " +
                                std::to_string(w.cols) + " input features");
  if (bias && static_cast<int64_t>(bias->size()) != w.rows)
    throw std::invalid_argument("linear: bias of " + std::to_string(bias->size()) + " values for " +
                                std::to_string(w.rows) + " outputs");
  for (const LoraBranch& br : lora) check_branch(br, w);
  const int64_t n = xv.dim(0), out = w.rows;
  if (residual && residual->value.shape != std::vector<int64_t>{n, out})
    throw std::invalid_argument("linear: residual " + residual->value.shape_str() +
                                " does not fit an output of [" + std::to_string(n) + ", " +
                                std::to_string(out) + "]");
}

// u = dropout(x) A^T [n, r] per branch, kept for dB. A folded branch has none: backward forms it
// from the x blocks it reads for dA anyway, so forward makes no pass over x for it.
std::vector<Tensor> branch_projections(Tape& tape, std::span<const LoraBranch> lora,
                                       const Tensor& xv, Join join) {
  std::vector<Tensor> low_rank;
  std::vector<float> scratch;
  const OpTimer lora_timer(lora.empty() || join == Join::Fold ? nullptr : tape.profile(), "lora",
                           tape.forward_phase());
  const int64_t n = xv.dim(0), in = xv.dim(1);
  for (const LoraBranch& br : lora) {
    low_rank.emplace_back();
    if (join == Join::Fold) continue;
    const int64_t r = br.A->value.dim(0);
    low_rank.back() = Tensor({n, r});
    kernels::rank_project(branch_input(br, xv, scratch), n, br.A->value.ptr(), in, r, 1.0f,
                          low_rank.back().ptr());
  }
  return low_rank;
}

// y [n, out] += bias, then scale * u B^T for each branch that is not folded into the product.
void add_bias_and_branches(Tape& tape, const std::vector<float>* bias,
                           std::span<const LoraBranch> lora, std::span<const Tensor> low_rank,
                           Join join, Tensor& y) {
  const int64_t n = y.dim(0), out = y.dim(1);
  if (bias)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) y.data[i * out + o] += (*bias)[o];
  if (join != Join::Separate) return;
  const OpTimer lora_timer(lora.empty() ? nullptr : tape.profile(), "lora", tape.forward_phase());
  for (std::size_t i = 0; i < lora.size(); ++i) {
    const int64_t r = lora[i].A->value.dim(0);
    const std::vector<float> bt = kernels::transposed(lora[i].B->value.ptr(), out, r);
    kernels::rank_expand(low_rank[i].ptr(), n, bt.data(), out, r, lora[i].scale, y.ptr());
  }
}

}  // namespace

Var linear(Tape& tape, Var x, const FrozenWeight& w, const std::vector<float>* bias,
           std::span<const LoraBranch> lora, Var residual) {
  const OpTimer timer(tape.profile(), "linear", tape.forward_phase());
  const Tensor& xv = x->value;
  check_linear_inputs(xv, w, bias, lora, residual);
  const int64_t n = xv.dim(0), out = w.rows;
  Tensor y = residual ? residual->value : Tensor({n, out});
  const ComputeDType compute = tape.compute_dtype();
  const Join join = join_of(lora, n, compute);

  const bool trains = any_trainable(lora);
  std::vector<Tensor> low_rank = branch_projections(tape, lora, xv, join);
  // A fresh y is zeros already: adding into it spares sgemm's own zeroing pass over y. oneDNN's
  // bf16 product instead pays for adding, with a read of y.
  const bool add_into_y = residual || !uses_bf16(compute);
  frozen_matmul(w, xv.ptr(), n, y.ptr(), add_into_y ? 1.0f : 0.0f, compute, deltas_of(lora, join),
                forward_sides(lora, low_rank, join), tape.gemv_activations());
  add_bias_and_branches(tape, bias, lora, low_rank, join, y);

  const bool residual_grad = residual && residual->requires_grad;
  Var result = tape.make(std::move(y), x->requires_grad || trains || residual_grad);
  if (!result->requires_grad) return result;
  std::vector<LoraBranch> branches(lora.begin(), lora.end());
  auto backward = [&tape, x, &w, result, compute, join,
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
        if (!br.trainable && (!x->requires_grad || join == Join::Fold)) continue;
        const int64_t r = br.A->value.dim(0);
        std::vector<float>& gu = gus[bi];
        gu.resize(static_cast<std::size_t>(n * r));
        if (br.trainable) {
          br.A->ensure_grad();
          br.B->ensure_grad();
          kernels::lora_backward(g, branch_input(br, xv, scratch),
                                 join == Join::Fold ? nullptr : low_rank[bi].ptr(),
                                 br.A->value.ptr(), br.B->value.ptr(), n, in, out, r, br.scale,
                                 gu.data(), br.A->grad.ptr(), br.B->grad.ptr());
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
                             deltas_of(branches, join), input_grad_sides(branches, gus, join));
    if (join != Join::Separate) return;
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

std::vector<Var> linears(Tape& tape, Var x, std::span<const LinearOf> each) {
  const Tensor& xv = x->value;
  const bool trains = std::any_of(each.begin(), each.end(),
                                  [](const LinearOf& l) { return any_trainable(l.lora); });
  const int64_t n = xv.rank() == 2 ? xv.dim(0) : 0;
  std::vector<Var> outputs;
  if (each.size() < 2 || x->requires_grad || trains || n > kGemvMaxTokens ||
      uses_bf16(tape.compute_dtype())) {
    for (const LinearOf& l : each) outputs.push_back(linear(tape, x, *l.w, l.bias, l.lora));
    return outputs;
  }
  const OpTimer timer(tape.profile(), "linear", tape.forward_phase());
  std::vector<Tensor> ys;
  std::vector<GemvProduct> products;
  for (const LinearOf& l : each) {
    check_linear_inputs(xv, *l.w, l.bias, l.lora, nullptr);
    ys.emplace_back(std::vector<int64_t>{n, l.w->rows});
  }
  for (std::size_t i = 0; i < each.size(); ++i) products.push_back({each[i].w, ys[i].ptr(), 0.0f});
  frozen_gemv(products, xv.ptr(), n, tape.gemv_activations());
  for (std::size_t i = 0; i < each.size(); ++i) {
    const Join join = join_of(each[i].lora, n, tape.compute_dtype());
    const std::vector<Tensor> low_rank = branch_projections(tape, each[i].lora, xv, join);
    add_bias_and_branches(tape, each[i].bias, each[i].lora, low_rank, join, ys[i]);
    outputs.push_back(tape.make(std::move(ys[i]), false));
  }
  return outputs;
}

}  // namespace lora::ag
