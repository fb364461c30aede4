// Batches of examples: grouped by length so little padding is wasted, shuffled per epoch from a
// seed, and walked by a cursor small enough to store in a checkpoint.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "data/dataset_encode.h"

namespace lora::data {

// One padded batch, row-major [batch, seq]. Row b holds example ids[0..L-1) as inputs and
// ids[1..L) as targets; positions past the example are padding (key_valid 0, weight 0).
struct Batch {
  int64_t batch = 0;
  int64_t seq = 0;
  std::vector<int32_t> inputs;
  std::vector<int32_t> targets;
  std::vector<float> weights;      // 1 for a trained target, else 0
  std::vector<uint8_t> key_valid;  // 1 for a real input token, 0 for padding
  int64_t tokens = 0;              // real input tokens
  int64_t trained_tokens = 0;      // sum of weights
};

// Pads the examples into one batch (pad id 0: padded positions are never attended or scored).
Batch make_batch(std::span<const Example* const> examples);

// Where a run is in its data: the epoch and the index of the next batch in that epoch's order.
struct DataCursor {
  int64_t epoch = 0;
  int64_t position = 0;
  bool operator==(const DataCursor&) const = default;
};

// Where a BatchPlan takes its examples from: a vector in memory, or a file read on demand
// (data/jsonl_stream.h).
class ExampleSource {
 public:
  virtual ~ExampleSource() = default;
  virtual std::size_t size() const = 0;
  virtual std::size_t length(std::size_t i) const = 0;  // example i's token count
  // Example i: a reference into the source, or `scratch` filled and returned.
  virtual const Example& get(std::size_t i, Example& scratch) const = 0;
};

// Examples held in memory (the vector must outlive the source).
class ExamplesInMemory : public ExampleSource {
 public:
  explicit ExamplesInMemory(const std::vector<Example>& examples) : examples_(examples) {}
  std::size_t size() const override { return examples_.size(); }
  std::size_t length(std::size_t i) const override { return examples_[i].ids.size(); }
  const Example& get(std::size_t i, Example&) const override { return examples_[i]; }

 private:
  const std::vector<Example>& examples_;
};

// Examples sorted by length and cut into groups of batch_size (the last group may be smaller);
// each epoch visits every group once, in an order that is a pure function of (seed, epoch), so a
// cursor is all the state a resumed run needs.
class BatchPlan {
 public:
  // `examples` must outlive the plan.
  BatchPlan(const std::vector<Example>& examples, int64_t batch_size, uint64_t seed,
            bool shuffle = true);
  BatchPlan(std::shared_ptr<const ExampleSource> examples, int64_t batch_size, uint64_t seed,
            bool shuffle = true);
  int64_t batches_per_epoch() const { return int64_t(groups_.size()); }
  // The group index visited at `position` of `epoch`.
  int64_t group_at(int64_t epoch, int64_t position) const;
  // The batch at the cursor; the cursor moves on (into the next epoch after the last group).
  Batch next(DataCursor& cursor) const;
  // Group g in a fixed order (validation and evaluation walk these without shuffling). With
  // parts > 1, only the part-th of `parts` contiguous slices of its examples (possibly none): the
  // share of one of several data-parallel processes that split one batch.
  Batch group(int64_t g, int64_t part = 0, int64_t parts = 1) const;

 private:
  std::shared_ptr<const ExampleSource> examples_;
  std::vector<std::vector<int64_t>> groups_;  // example indices
  uint64_t seed_;
  bool shuffle_;
};

// Deterministic, portable 64-bit mixing (splitmix64): the same stream on every platform and
// standard library, which std::shuffle does not promise.
uint64_t mix64(uint64_t x);

}  // namespace lora::data
