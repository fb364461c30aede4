#include "data/batch.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace lora::data {

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

Batch make_batch(std::span<const Example* const> examples) {
  Batch b;
  b.batch = int64_t(examples.size());
  for (const Example* ex : examples) b.seq = std::max<int64_t>(b.seq, int64_t(ex->ids.size()) - 1);
  const std::size_t n = std::size_t(b.batch * b.seq);
  b.inputs.assign(n, 0);
  b.targets.assign(n, 0);
  b.weights.assign(n, 0.0f);
  b.key_valid.assign(n, 0);
  for (int64_t r = 0; r < b.batch; ++r) {
    const Example& ex = *examples[std::size_t(r)];
    const int64_t len = int64_t(ex.ids.size()) - 1;
    for (int64_t t = 0; t < len; ++t) {
      const std::size_t i = std::size_t(r * b.seq + t);
      b.inputs[i] = ex.ids[std::size_t(t)];
      b.targets[i] = ex.ids[std::size_t(t + 1)];
      b.weights[i] = ex.trained[std::size_t(t + 1)] ? 1.0f : 0.0f;
      b.key_valid[i] = 1;
      b.trained_tokens += ex.trained[std::size_t(t + 1)] ? 1 : 0;
    }
    b.tokens += std::max<int64_t>(len, 0);
  }
  return b;
}

BatchPlan::BatchPlan(const std::vector<Example>& examples, int64_t batch_size, uint64_t seed,
                     bool shuffle)
    : BatchPlan(std::make_shared<ExamplesInMemory>(examples), batch_size, seed, shuffle) {}

BatchPlan::BatchPlan(std::shared_ptr<const ExampleSource> examples, int64_t batch_size,
                     uint64_t seed, bool shuffle)
    : examples_(std::move(examples)), seed_(seed), shuffle_(shuffle) {
  if (batch_size < 1) throw std::runtime_error("batch size must be at least 1");
  const std::size_t n = examples_->size();
  if (n == 0) throw std::runtime_error("no examples to batch");
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  // Stable: equal lengths keep file order, so the grouping is the same on every platform.
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return examples_->length(std::size_t(a)) < examples_->length(std::size_t(b));
  });
  for (std::size_t i = 0; i < order.size(); i += std::size_t(batch_size)) {
    auto end = std::min(order.size(), i + std::size_t(batch_size));
    groups_.emplace_back(order.begin() + std::ptrdiff_t(i), order.begin() + std::ptrdiff_t(end));
  }
}

int64_t BatchPlan::group_at(int64_t epoch, int64_t position) const {
  const int64_t n = batches_per_epoch();
  if (!shuffle_) return position;
  // Fisher-Yates from a stream seeded by (seed, epoch); n is small, so rebuilding is cheap.
  std::vector<int64_t> perm(static_cast<std::size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  uint64_t state = mix64(seed_ ^ mix64(uint64_t(epoch) + 0x5EED));
  for (int64_t i = n - 1; i > 0; --i) {
    state = mix64(state);
    const int64_t j = int64_t(state % uint64_t(i + 1));
    std::swap(perm[std::size_t(i)], perm[std::size_t(j)]);
  }
  return perm[std::size_t(position)];
}

Batch BatchPlan::group(int64_t g, int64_t part, int64_t parts) const {
  const auto& indices = groups_.at(std::size_t(g));
  const auto n = int64_t(indices.size());
  const int64_t begin = n * part / parts, end = n * (part + 1) / parts;
  std::vector<Example> scratch(std::size_t(end - begin));
  std::vector<const Example*> members;
  for (int64_t k = begin; k < end; ++k)
    members.push_back(
        &examples_->get(std::size_t(indices[std::size_t(k)]), scratch[std::size_t(k - begin)]));
  return make_batch(members);
}

Batch BatchPlan::next(DataCursor& cursor) const {
  Batch b = group(group_at(cursor.epoch, cursor.position));
  if (++cursor.position == batches_per_epoch()) {
    cursor.position = 0;
    ++cursor.epoch;
  }
  return b;
}

}  // namespace lora::data
