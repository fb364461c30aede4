#include "trainer/data_parallel.h"

#include <algorithm>
#include <chrono>

#include "trainer/batch_loss.h"

namespace lora {

std::vector<BatchShare> shares_of_rank(int64_t micro_batches, int rank, int ranks) {
  const int64_t m = micro_batches, n = ranks, r = rank;
  std::vector<BatchShare> shares;
  if (m >= n) {
    for (int64_t a = r * m / n; a < (r + 1) * m / n; ++a) shares.push_back({a, 0, 1});
    return shares;
  }
  // Rank r works on micro-batch r*m/n with the other ranks that map to it.
  const int64_t a = r * m / n;
  const int64_t first = (a * n + m - 1) / m, end = ((a + 1) * n + m - 1) / m;
  shares.push_back({a, r - first, end - first});
  return shares;
}

GradientExchange::GradientExchange(std::span<ag::Parameter* const> params, int64_t micro_batches,
                                   bool ordered, Communicator& comm)
    : params_(params.begin(), params.end()),
      micro_batches_(micro_batches),
      ordered_(ordered),
      comm_(comm) {
  for (const ag::Parameter* p : params_) count_ += p->value.numel();
  if (comm_.size() > 1) slots_.assign(std::size_t((ordered_ ? micro_batches_ : 1) * count_), 0.0f);
}

int64_t GradientExchange::floats_per_step() const {
  return comm_.size() > 1 ? int64_t(slots_.size()) : 0;
}

void GradientExchange::begin_step() {
  for (ag::Parameter* p : params_) p->zero_grad();
  if (ordered_) std::fill(slots_.begin(), slots_.end(), 0.0f);
}

void GradientExchange::pack(std::span<float> into) const {
  std::size_t at = 0;
  for (const ag::Parameter* p : params_) {
    std::copy(p->grad.data.begin(), p->grad.data.end(), into.begin() + std::ptrdiff_t(at));
    at += p->grad.data.size();
  }
}

// grad += from, element by element: the same float additions the backward kernels make when one
// process accumulates micro-batches.
void GradientExchange::unpack_add(std::span<const float> from) {
  std::size_t at = 0;
  for (ag::Parameter* p : params_)
    for (float& g : p->grad.data) g += from[at++];
}

void GradientExchange::after_backward(int64_t micro) {
  if (comm_.size() == 1 || !ordered_) return;
  const std::span<float> slot(slots_.data() + micro * count_, std::size_t(count_));
  pack(slot);
  for (ag::Parameter* p : params_) p->grad.zero();
}

void GradientExchange::reduce() {
  if (comm_.size() == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  if (!ordered_) {
    pack(slots_);
    comm_.all_reduce_sum(std::span<float>(slots_), "gradient all-reduce");
    for (ag::Parameter* p : params_) p->grad.zero();
  } else {
    comm_.all_reduce_sum(std::span<float>(slots_), "gradient all-reduce");
  }
  // Adding an all-zero slot (a micro-batch no rank computed) changes nothing: a gradient
  // accumulated from +0 is never -0.
  for (int64_t m = 0; m < (ordered_ ? micro_batches_ : 1); ++m)
    unpack_add(std::span<const float>(slots_.data() + m * count_, std::size_t(count_)));
  reduce_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

LocalStep accumulate_shares(const StepSetup& setup, int64_t step, data::DataCursor& cursor,
                            GradientExchange& exchange, Communicator& comm) {
  // Every rank walks all micro-batches: the normalizer is the global batch's trained tokens, and
  // the cursor moves the same way on every rank.
  const auto m = std::size_t(setup.micro_batches);
  std::vector<data::Batch> micro;
  std::vector<int64_t> groups;
  LocalStep out;
  for (std::size_t a = 0; a < m; ++a) {
    groups.push_back(setup.plan.group_at(cursor.epoch, cursor.position));
    micro.push_back(setup.plan.next(cursor));
    out.trained_tokens += micro.back().trained_tokens;
    out.tokens += micro.back().tokens;
  }
  exchange.begin_step();
  const float normalizer = float(std::max<int64_t>(out.trained_tokens, 1));
  out.micro_losses.assign(m, 0.0);
  for (const BatchShare& share : shares_of_rank(setup.micro_batches, comm.rank(), comm.size())) {
    const auto a = std::size_t(share.micro);
    const data::Batch part =
        share.parts == 1 ? data::Batch() : setup.plan.group(groups[a], share.part, share.parts);
    const data::Batch& b = share.parts == 1 ? micro[a] : part;
    if (b.trained_tokens == 0) continue;
    ag::Tape tape;
    tape.set_release_values(true);  // only the loss (the seed) is read after backward
    AdapterStack stack;
    stack.adapters = {&setup.adapter};
    stack.training = true;
    stack.dropout_seed = data::mix64(setup.seed ^ data::mix64(uint64_t(step) * 1024 + a));
    const BatchLoss loss = batch_loss(tape, setup.model, stack, b, normalizer, setup.forward);
    tape.backward(loss.loss);
    out.micro_losses[a] += loss.value();
    exchange.after_backward(share.micro);
  }
  return out;
}

double exchange_step(std::vector<double>& micro_losses, GradientExchange& exchange,
                     Communicator& comm) {
  // Each micro-batch's loss is non-zero on the ranks that computed it only.
  comm.all_reduce_sum(std::span<double>(micro_losses), "loss all-reduce");
  double loss = 0.0;
  for (double l : micro_losses) loss += l;
  exchange.reduce();
  return loss;
}

}  // namespace lora
