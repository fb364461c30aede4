// cross_entropy_head: the output head and the token cross-entropy fused. The vocabulary is
// walked in tiles with an online log-sum-exp (the FlashAttention recurrence over the vocabulary),
// so [n, vocab] logits never exist; each head tile is widened once per pass (a 4-bit head is
// dequantized once, not once per row chunk), and every product has thousands of rows.
//
// While training, the same pass also accumulates sum_v softmax_v * W_v per row with the same
// online rescaling, which gives d(loss)/d(hidden) = coef * (that / sum - W_target) without a
// second pass over the head: two head products per token instead of three. The gradient is
// linear in the loss seed, so backward only scales the rows it kept.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "autograd/kernels/kernels_exp.h"
#include "autograd/kernels/matmul_bf16.h"
#include "autograd/ops.h"
#include "autograd/parallel.h"

namespace lora::ag {
namespace {

// Rows per block and vocabulary entries per tile: a [rows, tile] block of logits is about
// 16 MiB, and blocks are as tall as possible so each head tile is widened once per pass.
constexpr int64_t kMaxBlockRows = 4096;
constexpr int64_t kLogitFloats = int64_t(1) << 22;

// The widened head tile is bounded too (a short block would otherwise widen the whole head).
int64_t vocab_tile(int64_t block_rows, int64_t vocab, int64_t dim) {
  const int64_t by_logits = kLogitFloats / std::max<int64_t>(block_rows, 1);
  const int64_t by_head = kLogitFloats / std::max<int64_t>(dim, 1);
  const int64_t t = std::max<int64_t>(256, std::min(by_logits, by_head));
  return std::min(vocab, t / 64 * 64);
}

// Copies the hidden rows listed in `rows` into a dense [rows.size(), dim] buffer.
void gather_rows(const Tensor& hidden, std::span<const int64_t> rows, std::vector<float>& out) {
  const int64_t dim = hidden.dim(1);
  out.resize(rows.size() * static_cast<std::size_t>(dim));
  parallel_for(static_cast<int64_t>(rows.size()), rows.size() > 256, [&](int64_t i) {
    std::copy_n(hidden.ptr() + rows[i] * dim, dim, out.data() + i * dim);
  });
}

// Head rows [v0, v1) as f32: a pointer into an f32 head, else widened into `buf`.
const float* head_tile(const FrozenWeight& head, int64_t v0, int64_t v1, std::vector<float>& buf) {
  if (head.format == WeightFormat::F32) return head.f32.data() + v0 * head.cols;
  buf.resize(static_cast<std::size_t>((v1 - v0) * head.cols));
  head.rows_f32(v0, v1, buf.data());
  return buf.data();
}

// Head rows [v0, v1) as bf16: a pointer into a bf16 head, else rounded into `buf`.
const uint16_t* head_tile_bf16(const FrozenWeight& head, int64_t v0, int64_t v1,
                               std::vector<uint16_t>& buf) {
  if (head.format == WeightFormat::BF16) return head.bf16.data() + v0 * head.cols;
  buf.resize(static_cast<std::size_t>((v1 - v0) * head.cols));
  head.rows_bf16(v0, v1, buf.data());
  return buf.data();
}

// Soft-capping of the logits (cap * tanh(logit / cap), Gemma 2): the cap (0 = off) and, per row,
// the derivative at the target logit, which its gradient term is scaled by.
struct LogitCap {
  float cap = 0;
  float* target_slope = nullptr;  // [m]
};

// One block of rows through the whole vocabulary: lse per row, the target logit, and (when
// `softmax_w` is given, [m, dim]) sum_v softmax_v W_v (times d capped / d logit when capped).
// With bf16 compute both head products run on bf16 operands (the hidden rows, the softmax tile
// and the head tile) with f32 accumulation.
void head_pass(const FrozenWeight& head, const float* h, int64_t m, const int32_t* targets,
               double* lse, float* target_logit, float* softmax_w, ComputeDType compute,
               const LogitCap& capping) {
  const int64_t dim = head.cols, vocab = head.rows, tile = vocab_tile(m, vocab, dim);
  const bool bf16 = uses_bf16(compute);
  std::vector<float> logits(static_cast<std::size_t>(m * tile)), wbuf;
  const float cap = capping.cap;
  std::vector<float> slope(cap > 0 && softmax_w ? logits.size() : 0);
  std::vector<uint16_t> wbuf16;
  std::vector<float> run_max(static_cast<std::size_t>(m), -std::numeric_limits<float>::infinity());
  std::vector<double> run_sum(static_cast<std::size_t>(m), 0.0);
  if (softmax_w) std::fill(softmax_w, softmax_w + m * dim, 0.0f);
  for (int64_t v0 = 0; v0 < vocab; v0 += tile) {
    const int64_t v1 = std::min(vocab, v0 + tile), nv = v1 - v0;
    const float* w = bf16 ? nullptr : head_tile(head, v0, v1, wbuf);
    const uint16_t* w16 = bf16 ? head_tile_bf16(head, v0, v1, wbuf16) : nullptr;
    if (bf16)
      matmul_bf16(Bf16Product::XWt, w16, nv, dim, h, m, logits.data());
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(m), int(nv), int(dim), 1.0f, h,
                  int(dim), w, int(dim), 0.0f, logits.data(), int(nv));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; ++i) {
      float* l = logits.data() + i * nv;
      float* sl = slope.empty() ? nullptr : slope.data() + i * nv;
      if (cap > 0)
        for (int64_t v = 0; v < nv; ++v) {
          const float th = std::tanh(l[v] / cap);
          l[v] = cap * th;
          if (sl) sl[v] = 1.0f - th * th;
        }
      const int32_t t = targets[i];
      if (t >= v0 && t < v1) {
        target_logit[i] = l[t - v0];
        if (sl) capping.target_slope[i] = sl[t - v0];
      }
      const float new_max = std::max(run_max[i], kernels::max_of(l, nv));
      const double rescale = std::exp(double(run_max[i]) - double(new_max));  // 0 on the first tile
      const double tile_sum = kernels::exp_shift_sum(l, nv, new_max);  // l becomes exp(l - max)
      run_sum[i] = run_sum[i] * rescale + tile_sum;
      run_max[i] = new_max;
      if (sl)
        for (int64_t v = 0; v < nv; ++v) l[v] *= sl[v];  // the products below take the slope
      if (softmax_w && rescale != 1.0) {
        float* acc = softmax_w + i * dim;
        for (int64_t d = 0; d < dim; ++d) acc[d] *= float(rescale);
      }
    }
    if (softmax_w && bf16)
      matmul_bf16(Bf16Product::GW, w16, nv, dim, logits.data(), m, softmax_w, 1.0f);
    else if (softmax_w)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(m), int(dim), int(nv), 1.0f,
                  logits.data(), int(nv), w, int(dim), 1.0f, softmax_w, int(dim));
  }
  for (int64_t i = 0; i < m; ++i) lse[i] = double(run_max[i]) + std::log(run_sum[i]);
  if (!softmax_w) return;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < m; ++i) {
    const float inv = float(1.0 / run_sum[i]);
    for (int64_t d = 0; d < dim; ++d) softmax_w[i * dim + d] *= inv;
  }
}

}  // namespace

Var cross_entropy_head(Tape& tape, Var hidden, const FrozenWeight& head,
                       std::span<const int32_t> targets, std::span<const float> weights,
                       float normalizer, float logit_softcap) {
  const OpTimer timer(tape.profile(), "cross_entropy", tape.forward_phase());
  const Tensor& h = hidden->value;
  const int64_t n = h.rank() == 2 ? h.dim(0) : -1;
  if (n < 0 || h.dim(1) != head.cols)
    throw std::invalid_argument("cross_entropy_head: hidden " + h.shape_str() +
                                " does not fit a head with " + std::to_string(head.cols) +
                                " input features");
  if (static_cast<int64_t>(targets.size()) != n || static_cast<int64_t>(weights.size()) != n)
    throw std::invalid_argument("cross_entropy_head: " + std::to_string(targets.size()) +
                                " targets and " + std::to_string(weights.size()) + " weights for " +
                                std::to_string(n) + " rows");
  if (!(normalizer > 0.0f))
    throw std::invalid_argument("cross_entropy_head: normalizer must be positive, got " +
                                std::to_string(normalizer));
  const int64_t vocab = head.rows, dim = head.cols;
  std::vector<int64_t> active;
  for (int64_t i = 0; i < n; ++i) {
    if (weights[i] == 0.0f) continue;
    if (targets[i] < 0 || targets[i] >= vocab)
      throw std::out_of_range("cross_entropy_head: target " + std::to_string(targets[i]) +
                              " at row " + std::to_string(i) + " is outside the vocabulary of " +
                              std::to_string(vocab));
    active.push_back(i);
  }

  const bool grad = hidden->requires_grad && tape.recording();
  const auto count = static_cast<int64_t>(active.size());
  // d(loss)/d(hidden) of the active rows at seed 1, [count, dim] (training only).
  std::vector<float> dh_rows(grad ? static_cast<std::size_t>(count * dim) : 0);
  std::vector<float> rows, target_logit(static_cast<std::size_t>(count)), w_target;
  std::vector<int32_t> block_targets;
  std::vector<double> lse(static_cast<std::size_t>(count));
  std::vector<float> target_slope(static_cast<std::size_t>(count), 1.0f);
  double total = 0.0;
  for (int64_t b0 = 0; b0 < count; b0 += kMaxBlockRows) {
    const int64_t m = std::min(kMaxBlockRows, count - b0);
    const auto part = std::span<const int64_t>(active).subspan(b0, m);
    gather_rows(h, part, rows);
    block_targets.resize(static_cast<std::size_t>(m));
    for (int64_t i = 0; i < m; ++i) block_targets[i] = targets[part[i]];
    head_pass(head, rows.data(), m, block_targets.data(), lse.data() + b0, target_logit.data() + b0,
              grad ? dh_rows.data() + b0 * dim : nullptr, tape.compute_dtype(),
              LogitCap{logit_softcap, target_slope.data() + b0});
    for (int64_t i = 0; i < m; ++i)
      total += double(weights[part[i]]) * (lse[b0 + i] - double(target_logit[b0 + i]));
    if (!grad) continue;
    // dh = coef * (softmax W - W_target), coef = weight / normalizer (each W_v times the cap's
    // slope at v when capped).
    w_target.resize(static_cast<std::size_t>(dim));
    for (int64_t i = 0; i < m; ++i) {
      head.rows_f32(block_targets[i], block_targets[i] + 1, w_target.data());
      const float coef = weights[part[i]] / normalizer;
      const float slope_t = target_slope[b0 + i];
      float* d = dh_rows.data() + (b0 + i) * dim;
      for (int64_t k = 0; k < dim; ++k) d[k] = coef * (d[k] - slope_t * w_target[k]);
    }
  }
  Var loss = tape.make(Tensor({1}, float(total / double(normalizer))), hidden->requires_grad);
  if (!loss->requires_grad) return loss;

  tape.push_backward(
      [&tape, hidden, loss, active = std::move(active), dh_rows = std::move(dh_rows)] {
        if (loss->grad.data.empty() || active.empty()) return;
        const float seed = loss->grad.data[0];
        const int64_t dim = hidden->value.dim(1);
        float* dh = tape.grad(hidden).ptr();
#pragma omp parallel for schedule(static)
        for (std::size_t i = 0; i < active.size(); ++i) {
          float* out = dh + active[i] * dim;
          const float* src = dh_rows.data() + i * dim;
          for (int64_t k = 0; k < dim; ++k) out[k] += seed * src[k];
        }
      },
      "cross_entropy", loss);
  return loss;
}

Tensor head_logits(const FrozenWeight& head, const Tensor& hidden, GemvActivations activations) {
  if (hidden.rank() != 2 || hidden.dim(1) != head.cols)
    throw std::invalid_argument("head_logits: hidden " + hidden.shape_str() +
                                " does not fit a head with " + std::to_string(head.cols) +
                                " input features");
  Tensor logits({hidden.dim(0), head.rows});
  frozen_matmul(head, hidden.ptr(), hidden.dim(0), logits.ptr(), 0.0f, ComputeDType::F32, {}, {},
                activations);
  return logits;
}

}  // namespace lora::ag
