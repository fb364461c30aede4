// The sampler's filters against distributions worked out by hand, and stop strings found in text
// that arrives in pieces.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "trainer/sampler.h"
#include "trainer/text_stream.h"

namespace lora {
namespace {

// Probabilities 0.1, 0.2, 0.3, 0.4 at temperature 1.
const std::vector<float> kLogits{std::log(0.1f), std::log(0.2f), std::log(0.3f), std::log(0.4f)};

SamplingOptions at_t1() {
  SamplingOptions o;
  o.temperature = 1.0f;
  return o;
}

void expect_distribution(const std::vector<double>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "token " << i;
}

TEST(Sampler, TemperatureSharpens) {
  SamplingOptions o = at_t1();
  expect_distribution(Sampler(o).distribution(kLogits), {0.1, 0.2, 0.3, 0.4});
  o.temperature = 0.5f;  // p^2 renormalized: 0.01, 0.04, 0.09, 0.16 over 0.30
  expect_distribution(Sampler(o).distribution(kLogits), {1 / 30., 4 / 30., 9 / 30., 16 / 30.});
}

TEST(Sampler, TopKKeepsTheKMostLikely) {
  SamplingOptions o = at_t1();
  o.top_k = 2;
  expect_distribution(Sampler(o).distribution(kLogits), {0, 0, 3 / 7., 4 / 7.});
  o.top_k = 10;  // more than the vocabulary: nothing dropped
  expect_distribution(Sampler(o).distribution(kLogits), {0.1, 0.2, 0.3, 0.4});
}

TEST(Sampler, TopPKeepsTheSmallestSetReachingTheMass) {
  SamplingOptions o = at_t1();
  o.top_p = 0.75f;  // 0.4, 0.7 < 0.75, 0.9 reaches it
  expect_distribution(Sampler(o).distribution(kLogits), {0, 2 / 9., 3 / 9., 4 / 9.});
  o.top_p = 0.05f;  // the most likely token alone
  expect_distribution(Sampler(o).distribution(kLogits), {0, 0, 0, 1});
}

// The filters as written: sort the whole vocabulary, then cut. The sampler sorts only a prefix;
// on a vocabulary of 50k with a long tail (nucleus of thousands of tokens) it keeps the same set.
std::vector<double> filtered_by_full_sort(const std::vector<float>& logits,
                                          const SamplingOptions& o) {
  std::vector<std::pair<double, int32_t>> p;
  const float top = *std::max_element(logits.begin(), logits.end());
  double total = 0;
  for (std::size_t i = 0; i < logits.size(); ++i) {
    p.push_back({std::exp(double(logits[i] - top) / o.temperature), int32_t(i)});
    total += p.back().first;
  }
  std::sort(p.begin(), p.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  std::size_t keep = o.top_k > 0 ? std::min<std::size_t>(p.size(), o.top_k) : p.size();
  double kept_total = 0, mass = 0;
  for (std::size_t i = 0; i < keep; ++i) kept_total += p[i].first;
  std::size_t n = 0;
  while (n < keep && o.top_p < 1.0f) {
    mass += p[n++].first;
    if (mass >= o.top_p * kept_total) break;
  }
  if (o.top_p < 1.0f) keep = n;
  n = 1;
  while (o.min_p > 0.0f && n < keep && p[n].first >= o.min_p * p[0].first) ++n;
  if (o.min_p > 0.0f) keep = n;
  double sum = 0;
  for (std::size_t i = 0; i < keep; ++i) sum += p[i].first;
  std::vector<double> out(logits.size(), 0.0);
  for (std::size_t i = 0; i < keep; ++i) out[p[i].second] = p[i].first / sum;
  return out;
}

TEST(Sampler, LargeVocabularyKeepsWhatAFullSortKeeps) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> logits(50000);
  for (auto& l : logits) l = nd(rng);
  for (float top_p : {0.3f, 0.9f, 0.999f, 1.0f})
    for (int64_t top_k : {int64_t(0), int64_t(40), int64_t(20000)})
      for (float min_p : {0.0f, 0.01f}) {
        SamplingOptions o = at_t1();
        o.top_p = top_p;
        o.top_k = top_k;
        o.min_p = min_p;
        if (top_p == 1.0f && top_k == 0 && min_p == 0.0f) continue;
        const auto got = Sampler(o).distribution(logits);
        const auto want = filtered_by_full_sort(logits, o);
        std::size_t kept = 0;
        for (std::size_t i = 0; i < want.size(); ++i) {
          ASSERT_EQ(got[i] > 0, want[i] > 0)
              << "token " << i << ", top_p " << top_p << ", top_k " << top_k << ", min_p " << min_p;
          // The sampler's exponentials run in float (the logits' precision), the reference's
          // in double.
          ASSERT_NEAR(got[i], want[i], 1e-6 * want[i]);
          kept += want[i] > 0;
        }
        EXPECT_GT(kept, 0u);
      }
}

TEST(Sampler, MinPDropsTokensFarBelowTheTop) {
  SamplingOptions o = at_t1();
  o.min_p = 0.6f;  // threshold 0.24: 0.3 and 0.4 stay
  expect_distribution(Sampler(o).distribution(kLogits), {0, 0, 3 / 7., 4 / 7.});
  o.min_p = 0.45f;  // threshold 0.18: 0.2 stays too
  expect_distribution(Sampler(o).distribution(kLogits), {0, 2 / 9., 3 / 9., 4 / 9.});
}

TEST(Sampler, FiltersRunInOrderTopKTopPMinP) {
  SamplingOptions o = at_t1();
  o.top_k = 3;     // 0.2, 0.3, 0.4 over 0.9
  o.top_p = 0.6f;  // 4/9 < 0.6, 7/9 reaches it: 0.3, 0.4 -> 3/7, 4/7
  expect_distribution(Sampler(o).distribution(kLogits), {0, 0, 3 / 7., 4 / 7.});
  o.min_p = 0.8f;  // 3/7 < 0.8 * 4/7: the top alone
  expect_distribution(Sampler(o).distribution(kLogits), {0, 0, 0, 1});
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  const std::vector<float> logits{1.0f, -1.0f, 0.5f, 2.0f};
  const std::vector<int32_t> seen{0, 1, 0};  // each seen token is penalized once
  SamplingOptions o = at_t1();
  o.repetition_penalty = 2.0f;
  const std::vector<double> penalized{0.5, -2.0, 0.5, 2.0};
  double z = 0;
  for (double l : penalized) z += std::exp(l);
  std::vector<double> want;
  for (double l : penalized) want.push_back(std::exp(l) / z);
  expect_distribution(Sampler(o).distribution(logits, seen), want);

  // Greedy picks from the penalized logits: 2.0 / 1.5 < 1.9.
  SamplingOptions greedy;
  greedy.repetition_penalty = 1.5f;
  const std::vector<float> close{2.0f, 1.9f};
  EXPECT_EQ(Sampler(greedy).sample(close, std::vector<int32_t>{0}), 1);
  EXPECT_EQ(Sampler(greedy).sample(close), 0);
}

// Greedy over a vocabulary-sized row: the first of the largest logits, wherever it falls in the
// vector lanes and the row's tail, tied or not, with or without NaNs.
TEST(Sampler, GreedyPicksTheFirstLargestLogit) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> logits(151936 + 7);
  for (auto& l : logits) l = nd(rng);
  Sampler greedy{SamplingOptions{}};
  for (std::size_t at : {std::size_t(0), std::size_t(17), std::size_t(151936 + 6)}) {
    for (std::size_t tie : {at + 1, std::size_t(100000)}) {
      std::vector<float> row = logits;
      if (tie < row.size()) row[tie] = 100.0f;
      row[at] = 100.0f;
      EXPECT_EQ(greedy.sample(row), static_cast<int32_t>(std::min(at, tie))) << at << " " << tie;
    }
  }
  const auto first_max = std::max_element(logits.begin(), logits.end()) - logits.begin();
  EXPECT_EQ(greedy.sample(logits), first_max);
  std::vector<float> with_nan = logits;
  with_nan[3] = std::nanf("");
  EXPECT_EQ(greedy.sample(with_nan), first_max);
}

// A temperature so small that 1/T overflows a float still gives the greedy choice, not NaNs.
TEST(Sampler, TinyTemperatureIsGreedy) {
  SamplingOptions o = at_t1();
  o.temperature = 1e-40f;
  expect_distribution(Sampler(o).distribution(kLogits), {0, 0, 0, 1});
  o.temperature = 1e-3f;
  o.top_p = 0.5f;
  expect_distribution(Sampler(o).distribution(kLogits), {0, 0, 0, 1});
}

TEST(Sampler, DrawsFollowTheFilteredDistribution) {
  SamplingOptions o = at_t1();
  o.top_k = 2;
  o.seed = 9;
  Sampler s(o);
  std::map<int, int> count;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++count[s.sample(kLogits)];
  EXPECT_EQ(count[0] + count[1], 0);
  EXPECT_NEAR(count[3] / double(n), 4 / 7., 0.015);
}

TEST(Sampler, RejectsBadFilterSettings) {
  SamplingOptions o;
  o.top_k = -1;
  EXPECT_THROW(Sampler{o}, std::invalid_argument);
  o = {};
  o.min_p = 1.5f;
  EXPECT_THROW(Sampler{o}, std::invalid_argument);
  o = {};
  o.repetition_penalty = 0.0f;
  EXPECT_THROW(Sampler{o}, std::invalid_argument);
}

TEST(StopStrings, CutsAtTheFirstStopAndHoldsBackPossibleStarts) {
  StopStrings s({"END", "o W"});
  EXPECT_EQ(s.push("abcE"), "abc");  // "E" may begin "END"
  EXPECT_EQ(s.push("N"), "");        // "EN" still may
  EXPECT_EQ(s.push("x Hel"), "ENx Hel");
  EXPECT_EQ(s.push("lo Wo"), "l");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("more"), "");
  EXPECT_EQ(s.finish(), "");

  StopStrings none({});
  EXPECT_EQ(none.push("text"), "text");
  StopStrings tail({"END"});
  EXPECT_EQ(tail.push("the EN"), "the ");
  EXPECT_EQ(tail.finish(), "EN");  // no stop came: the held-back text is shown at the end
  EXPECT_FALSE(tail.stopped());
}

}  // namespace
}  // namespace lora
