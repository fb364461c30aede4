// Batching: padding and masks, length grouping, seeded per-epoch shuffling, the cursor.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "data/batch.h"

namespace lora::data {
namespace {

Example example(std::vector<int32_t> ids, std::vector<uint8_t> trained = {}) {
  Example ex;
  ex.trained = trained.empty() ? std::vector<uint8_t>(ids.size(), 1) : trained;
  ex.trained[0] = 0;
  ex.ids = std::move(ids);
  return ex;
}

TEST(Batch, PadsShiftsAndMasks) {
  auto a = example({5, 6, 7, 8}, {0, 0, 1, 1});
  auto b = example({9, 10});
  std::vector<const Example*> both = {&a, &b};
  Batch batch = make_batch(both);
  ASSERT_EQ(batch.batch, 2);
  ASSERT_EQ(batch.seq, 3);
  EXPECT_EQ(batch.inputs, (std::vector<int32_t>{5, 6, 7, 9, 0, 0}));
  EXPECT_EQ(batch.targets, (std::vector<int32_t>{6, 7, 8, 10, 0, 0}));
  // Target 6 is a prompt token (trained[1] == 0): weight 0.
  EXPECT_EQ(batch.weights, (std::vector<float>{0, 1, 1, 1, 0, 0}));
  EXPECT_EQ(batch.key_valid, (std::vector<uint8_t>{1, 1, 1, 1, 0, 0}));
  EXPECT_EQ(batch.tokens, 4);
  EXPECT_EQ(batch.trained_tokens, 3);
}

std::vector<Example> ramp(int n) {
  std::vector<Example> out;
  // Lengths deliberately out of order: 2 + (i * 7) % n.
  for (int i = 0; i < n; ++i) out.push_back(example(std::vector<int32_t>(2 + (i * 7) % n, i)));
  return out;
}

TEST(Batch, GroupsByLengthAndVisitsEveryExampleOncePerEpoch) {
  auto examples = ramp(10);
  BatchPlan plan(examples, 4, /*seed=*/3);
  ASSERT_EQ(plan.batches_per_epoch(), 3);  // 4 + 4 + 2
  DataCursor cursor;
  std::multiset<int32_t> seen;
  int64_t padding = 0;
  for (int i = 0; i < 3; ++i) {
    Batch b = plan.next(cursor);
    for (std::size_t k = 0; k < b.inputs.size(); k += std::size_t(b.seq)) seen.insert(b.inputs[k]);
    padding += b.batch * b.seq - b.tokens;
  }
  EXPECT_EQ(cursor, (DataCursor{1, 0}));
  EXPECT_EQ(seen, (std::multiset<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  // Grouping by sorted length is the least padding any grouping into 4 + 4 + 2 can have: inputs
  // of lengths 1..10 (one shorter than the examples) in groups {1-4}, {5-8}, {9-10}.
  int64_t least = 0;
  for (auto [lo, hi] : {std::pair{1, 4}, std::pair{5, 8}, std::pair{9, 10}})
    for (int len = lo; len <= hi; ++len) least += hi - len;
  EXPECT_EQ(padding, least);
}

TEST(Batch, ShuffleIsAPureFunctionOfSeedAndEpoch) {
  auto examples = ramp(40);
  BatchPlan p1(examples, 2, 7), p2(examples, 2, 7), other(examples, 2, 8);
  std::vector<int64_t> e0, e1, e0_other;
  for (int64_t i = 0; i < p1.batches_per_epoch(); ++i) {
    e0.push_back(p1.group_at(0, i));
    e1.push_back(p1.group_at(1, i));
    e0_other.push_back(other.group_at(0, i));
    EXPECT_EQ(p1.group_at(0, i), p2.group_at(0, i));
  }
  EXPECT_NE(e0, e1);        // a new order each epoch
  EXPECT_NE(e0, e0_other);  // and per seed
  auto sorted = e1;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 20; ++i) EXPECT_EQ(sorted[std::size_t(i)], i);  // a permutation

  // A cursor restored mid-epoch continues the same sequence.
  DataCursor c;
  std::vector<std::vector<int32_t>> straight;
  for (int i = 0; i < 30; ++i) straight.push_back(p1.next(c).inputs);
  DataCursor resumed{0, 0};
  for (int i = 0; i < 13; ++i) p2.next(resumed);
  DataCursor copy = resumed;
  for (int i = 13; i < 30; ++i) EXPECT_EQ(p2.next(copy).inputs, straight[std::size_t(i)]) << i;
}

TEST(Batch, UnshuffledPlanKeepsLengthOrder) {
  auto examples = ramp(6);
  BatchPlan plan(examples, 2, 0, /*shuffle=*/false);
  int64_t last = 0;
  for (int64_t g = 0; g < plan.batches_per_epoch(); ++g) {
    EXPECT_EQ(plan.group_at(5, g), g);
    Batch b = plan.group(g);
    EXPECT_GE(b.seq, last);
    last = b.seq;
  }
}

}  // namespace
}  // namespace lora::data
