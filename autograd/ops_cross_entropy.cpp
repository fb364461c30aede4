// cross_entropy_head: the output head and the token cross-entropy fused, processed in chunks of
// rows so that [n, vocab] logits never exist at once; only rows with a non-zero weight are
// computed at all.
#include <algorithm>
#include <stdexcept>

#include "autograd/kernels_cross_entropy.h"
#include "autograd/ops.h"

namespace lora::ag {
namespace {

// Rows per chunk: about 16 MiB of logits at a time.
int64_t chunk_rows(int64_t vocab) {
  return std::clamp<int64_t>((int64_t(1) << 22) / vocab, 1, 256);
}

// Copies the hidden rows listed in `rows` into a dense [rows.size(), dim] buffer.
void gather_rows(const Tensor& hidden, std::span<const int64_t> rows, std::vector<float>& out) {
  const int64_t dim = hidden.dim(1);
  out.resize(rows.size() * static_cast<std::size_t>(dim));
  for (std::size_t i = 0; i < rows.size(); ++i)
    std::copy_n(hidden.ptr() + rows[i] * dim, dim, out.data() + i * dim);
}

}  // namespace

Var cross_entropy_head(Tape& tape, Var hidden, const FrozenWeight& head,
                       std::span<const int32_t> targets, std::span<const float> weights,
                       float normalizer) {
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
  const int64_t vocab = head.rows;
  std::vector<int64_t> active;
  for (int64_t i = 0; i < n; ++i) {
    if (weights[i] == 0.0f) continue;
    if (targets[i] < 0 || targets[i] >= vocab)
      throw std::out_of_range("cross_entropy_head: target " + std::to_string(targets[i]) +
                              " at row " + std::to_string(i) + " is outside the vocabulary of " +
                              std::to_string(vocab));
    active.push_back(i);
  }

  const int64_t chunk = chunk_rows(vocab);
  std::vector<float> rows, logits(static_cast<std::size_t>(chunk * vocab));
  std::vector<double> lse(active.size());
  double total = 0.0;
  for (std::size_t c0 = 0; c0 < active.size(); c0 += chunk) {
    const std::span<const int64_t> part = std::span<const int64_t>(active).subspan(
        c0, std::min<std::size_t>(chunk, active.size() - c0));
    const int64_t m = static_cast<int64_t>(part.size());
    gather_rows(h, part, rows);
    frozen_matmul(head, rows.data(), m, logits.data());
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < m; ++i)
      lse[c0 + i] = kernels::log_sum_exp(logits.data() + i * vocab, vocab);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t row = part[i];
      total += double(weights[row]) * (lse[c0 + i] - double(logits[i * vocab + targets[row]]));
    }
  }
  Var loss = tape.make(Tensor({1}, float(total / double(normalizer))), hidden->requires_grad);
  if (!loss->requires_grad) return loss;

  std::vector<int32_t> target_copy(targets.begin(), targets.end());
  std::vector<float> weight_copy(weights.begin(), weights.end());
  tape.push_backward([&tape, hidden, &head, loss, normalizer, active = std::move(active),
                      lse = std::move(lse), target_copy = std::move(target_copy),
                      weight_copy = std::move(weight_copy)] {
    if (loss->grad.data.empty() || active.empty()) return;
    const float seed = loss->grad.data[0];
    const Tensor& h = hidden->value;
    const int64_t dim = h.dim(1), vocab = head.rows, chunk = chunk_rows(vocab);
    Tensor& dh = tape.grad(hidden);
    std::vector<float> rows, logits(static_cast<std::size_t>(chunk * vocab)), drows;
    for (std::size_t c0 = 0; c0 < active.size(); c0 += chunk) {
      const std::span<const int64_t> part = std::span<const int64_t>(active).subspan(
          c0, std::min<std::size_t>(chunk, active.size() - c0));
      const int64_t m = static_cast<int64_t>(part.size());
      gather_rows(h, part, rows);
      frozen_matmul(head, rows.data(), m, logits.data());
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < m; ++i) {
        const int64_t row = part[i];
        kernels::cross_entropy_grad_inplace(logits.data() + i * vocab, vocab, target_copy[row],
                                            lse[c0 + i], seed * weight_copy[row] / normalizer);
      }
      drows.resize(static_cast<std::size_t>(m * dim));
      frozen_matmul_input_grad(head, logits.data(), m, drows.data());
      for (int64_t i = 0; i < m; ++i)
        for (int64_t d = 0; d < dim; ++d) dh.data[part[i] * dim + d] += drows[i * dim + d];
    }
  }, "cross_entropy");
  return loss;
}

Tensor head_logits(const FrozenWeight& head, const Tensor& hidden) {
  if (hidden.rank() != 2 || hidden.dim(1) != head.cols)
    throw std::invalid_argument("head_logits: hidden " + hidden.shape_str() +
                                " does not fit a head with " + std::to_string(head.cols) +
                                " input features");
  Tensor logits({hidden.dim(0), head.rows});
  frozen_matmul(head, hidden.ptr(), hidden.dim(0), logits.ptr());
  return logits;
}

}  // namespace lora::ag
