#include "trainer/sampler.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "autograd/kernels/kernels_exp.h"

namespace lora {

void validate(const SamplingOptions& o) {
  auto fail = [](const std::string& what, double got) {
    throw std::invalid_argument(what + ", got " + std::to_string(got));
  };
  if (!(o.temperature >= 0.0f) || !std::isfinite(o.temperature))
    fail("temperature must be >= 0", o.temperature);
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) fail("top-p must be in (0, 1]", o.top_p);
  if (o.top_k < 0) fail("top-k must be >= 0", static_cast<double>(o.top_k));
  if (!(o.min_p >= 0.0f && o.min_p <= 1.0f)) fail("min-p must be in [0, 1]", o.min_p);
  if (!(o.repetition_penalty > 0.0f) || !std::isfinite(o.repetition_penalty))
    fail("repetition penalty must be > 0", o.repetition_penalty);
}

Sampler::Sampler(const SamplingOptions& options) : options_(options), rng_(options.seed) {
  validate(options);
}

// The largest value comes from the vector max and then its first index from a search: a
// max_element's compare-and-select chain runs through a load per element, about 0.5 ms over
// Qwen2.5's 151936 logits, a twentieth of a two-thread decode step. A row with NaNs, where the
// search may miss, keeps max_element's answer.
int32_t Sampler::argmax() const {
  const float top = kernels::max_of(work_.data(), static_cast<int64_t>(work_.size()));
  auto at = std::find(work_.begin(), work_.end(), top);
  if (at == work_.end()) at = std::max_element(work_.begin(), work_.end());
  return static_cast<int32_t>(at - work_.begin());
}

namespace {

// Most likely first; ties by id, so any sort of any prefix agrees with the full sort. A lambda, so
// that the sorts inline it.
constexpr auto more_likely = [](const std::pair<double, int32_t>& a,
                                const std::pair<double, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
};

// Probability classes by binary exponent: class b holds p in [2^-(b+1), 2^-b) (class 0 also 1),
// the last class everything smaller, zero included.
constexpr int kProbabilityClasses = 64;

int probability_class(double p) {
  uint64_t bits;
  std::memcpy(&bits, &p, sizeof bits);
  const int biased_exponent = static_cast<int>(bits >> 52 & 0x7ff);
  return std::clamp(1022 - biased_exponent, 0, kProbabilityClasses - 1);
}

}  // namespace

// The filters only ever keep a prefix of kept_ in that order, usually a few dozen to a few
// thousand tokens of a vocabulary of 10^5. With top-k that prefix is the k most likely (a partial
// sort, which rejects most tokens in one comparison). Otherwise one pass sums the mass of each
// probability class; the classes from the top down to the first that completes the nucleus (or
// whose smaller neighbours all fall below min-p's cut) hold every token the filters can keep, and
// only those are sorted. Growing a partial sort until it held the nucleus took over a millisecond
// at Qwen2.5's 151936 tokens. Returns the length of the sorted prefix.
std::size_t Sampler::sort_kept_prefix(double total) {
  if (options_.top_k > 0) {
    const auto keep = std::min<std::size_t>(kept_.size(), options_.top_k);
    std::partial_sort(kept_.begin(), kept_.begin() + static_cast<std::ptrdiff_t>(keep), kept_.end(),
                      more_likely);
    return keep;
  }
  std::array<double, kProbabilityClasses> mass{};
  double top = 0;
  for (const auto& [p, id] : kept_) {
    mass[probability_class(p)] += p;
    top = std::max(top, p);
  }
  // The nucleus test has a margin, so that summing in another order later cannot leave it short.
  const double nucleus = options_.top_p * total * (1 + 1e-12);
  double above = 0;
  int last = 0;
  for (; last < kProbabilityClasses - 1; ++last) {
    above += mass[last];
    const bool nucleus_inside = options_.top_p < 1.0f && above >= nucleus;
    const bool rest_below_min_p =
        options_.min_p > 0.0f && std::ldexp(1.0, -(last + 1)) <= options_.min_p * top;
    if (nucleus_inside || rest_below_min_p) break;
  }
  const auto end = std::partition(kept_.begin(), kept_.end(), [last](const auto& k) {
    return probability_class(k.first) <= last;
  });
  std::sort(kept_.begin(), end, more_likely);
  return static_cast<std::size_t>(end - kept_.begin());
}

void Sampler::filter(std::span<const float> logits, std::span<const int32_t> seen) {
  if (logits.empty()) throw std::invalid_argument("cannot sample from an empty logits row");
  work_.assign(logits.begin(), logits.end());
  if (options_.repetition_penalty != 1.0f) {
    // Each distinct seen token once: mark, then penalize the marked.
    std::vector<uint8_t> marked(work_.size(), 0);
    for (int32_t id : seen)
      if (id >= 0 && static_cast<std::size_t>(id) < work_.size()) marked[id] = 1;
    for (std::size_t i = 0; i < work_.size(); ++i)
      if (marked[i])
        work_[i] = work_[i] > 0 ? work_[i] / options_.repetition_penalty
                                : work_[i] * options_.repetition_penalty;
  }
  kept_.clear();
  if (options_.temperature == 0.0f) {
    kept_.push_back({1.0, argmax()});
    return;
  }
  // Softmax of logits / T, in a stable form, the exponentials in float lanes (the logits' own
  // precision; std::exp in double took 0.7 ms a token at Qwen2.5's vocabulary) and summed in
  // double. The scale is capped so that a tiny temperature turns the gap to the top into -inf,
  // not 0 * inf.
  const auto size = static_cast<int64_t>(work_.size());
  const float max_logit = kernels::max_of(work_.data(), size);
  const auto inv_t = static_cast<float>(
      std::min<double>(1.0 / options_.temperature, std::numeric_limits<float>::max()));
  for (float& w : work_) w = (w - max_logit) * inv_t;
  kernels::exp_shift_sum(work_.data(), size, 0.0f);  // its f32-lane sum is not the total
  double total = 0;
  kept_.reserve(work_.size());
  for (std::size_t i = 0; i < work_.size(); ++i) {
    kept_.emplace_back(work_[i], static_cast<int32_t>(i));
    total += work_[i];
  }
  const bool filtering = options_.top_k > 0 || options_.top_p < 1.0f || options_.min_p > 0.0f;
  if (filtering) {
    std::size_t keep = sort_kept_prefix(total);
    if (options_.top_k > 0) keep = std::min<std::size_t>(keep, options_.top_k);
    if (options_.top_p < 1.0f) {
      // The nucleus is a share of what top-k left: everything when top-k is off (the sorted
      // prefix may be shorter than the vocabulary).
      double kept_total = options_.top_k > 0 ? 0.0 : total;
      if (options_.top_k > 0)
        for (std::size_t i = 0; i < keep; ++i) kept_total += kept_[i].first;
      double mass = 0;
      std::size_t n = 0;
      while (n < keep) {
        mass += kept_[n++].first;
        if (mass >= options_.top_p * kept_total) break;
      }
      keep = n;
    }
    if (options_.min_p > 0.0f) {
      const double threshold = options_.min_p * kept_[0].first;
      std::size_t n = 1;
      while (n < keep && kept_[n].first >= threshold) ++n;
      keep = n;
    }
    kept_.resize(keep);
    total = 0;
    for (const auto& k : kept_) total += k.first;
  }
  for (auto& k : kept_) k.first /= total;
}

std::vector<double> Sampler::distribution(std::span<const float> logits,
                                          std::span<const int32_t> seen) {
  filter(logits, seen);
  std::vector<double> p(logits.size(), 0.0);
  for (const auto& [prob, id] : kept_) p[id] = prob;
  return p;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> seen) {
  filter(logits, seen);
  if (kept_.size() == 1) return kept_[0].second;
  double r = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  for (const auto& [prob, id] : kept_) {
    r -= prob;
    if (r < 0) return id;
  }
  return kept_.back().second;  // rounding left a sliver: the last kept token
}

}  // namespace lora
