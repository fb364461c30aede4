#include "trainer/data_parallel.h"

#include <algorithm>
#include <chrono>

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

void GradientExchange::reduce(const std::vector<bool>& active) {
  if (comm_.size() == 1) return;
  const auto t0 = std::chrono::steady_clock::now();
  if (!ordered_) {
    pack(slots_);
    comm_.all_reduce_sum(std::span<float>(slots_), "gradient all-reduce");
    for (ag::Parameter* p : params_) p->grad.zero();
  } else {
    comm_.all_reduce_sum(std::span<float>(slots_), "gradient all-reduce");
  }
  for (int64_t m = 0; m < (ordered_ ? micro_batches_ : 1); ++m)
    if (!ordered_ || active[std::size_t(m)])
      unpack_add(std::span<const float>(slots_.data() + m * count_, std::size_t(count_)));
  reduce_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

StepGradient step_gradient(const StepSetup& setup, int64_t step, data::DataCursor& cursor,
                           GradientExchange& exchange, Communicator& comm) {
  // Every rank walks all micro-batches: the normalizer is the global batch's trained tokens, and
  // the cursor moves the same way on every rank.
  const auto m = std::size_t(setup.micro_batches);
  std::vector<data::Batch> micro;
  std::vector<int64_t> groups;
  StepGradient out;
  for (std::size_t a = 0; a < m; ++a) {
    groups.push_back(setup.plan.group_at(cursor.epoch, cursor.position));
    micro.push_back(setup.plan.next(cursor));
    out.trained_tokens += micro.back().trained_tokens;
    out.tokens += micro.back().tokens;
  }
  exchange.begin_step();
  const float normalizer = float(std::max<int64_t>(out.trained_tokens, 1));
  std::vector<double> losses(m, 0.0);  // per micro-batch, this rank's part
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
    ag::Var hidden = forward_hidden(tape, setup.model, stack, b.inputs, b.batch, b.seq, b.key_valid,
                                    setup.forward);
    ag::Var loss =
        ag::cross_entropy_head(tape, hidden, setup.model.head(), b.targets, b.weights, normalizer);
    tape.backward(loss);
    losses[a] += double(loss->value.data[0]);
    exchange.after_backward(share.micro);
  }
  // Each micro-batch's loss is non-zero on the ranks that computed it only; adding the exchanged
  // values in micro-batch order gives the sum one process makes.
  comm.all_reduce_sum(std::span<double>(losses), "loss all-reduce");
  std::vector<bool> active(m);
  for (std::size_t a = 0; a < m; ++a) {
    out.loss += losses[a];
    active[a] = micro[a].trained_tokens > 0;
  }
  exchange.reduce(active);
  return out;
}

}  // namespace lora
