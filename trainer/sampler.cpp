#include "trainer/sampler.h"

#include <algorithm>
#include <cmath>
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

// Most likely first; ties by id, so any sort of any prefix agrees with the full sort.
bool more_likely(const std::pair<double, int32_t>& a, const std::pair<double, int32_t>& b) {
  return a.first > b.first || (a.first == b.first && a.second < b.second);
}

}  // namespace

// The filters only ever keep a prefix of kept_ in that order, usually a few dozen of a vocabulary
// of 10^5: sort a prefix, and grow it until it holds every token top-k, top-p and min-p can keep.
// Returns the prefix length the filters start from (top-k's cut, or the sorted prefix).
std::size_t Sampler::sort_kept_prefix(double total) {
  const std::size_t limit =
      options_.top_k > 0 ? std::min<std::size_t>(kept_.size(), options_.top_k) : kept_.size();
  // With top-k the nucleus is a share of the k kept: sort those k.
  std::size_t sorted = options_.top_k > 0 ? limit : std::min<std::size_t>(limit, 256);
  for (;; sorted = std::min(limit, 4 * sorted)) {
    std::partial_sort(kept_.begin(), kept_.begin() + sorted, kept_.end(), more_likely);
    if (sorted == limit) return limit;
    double mass = 0;
    for (std::size_t i = 0; i < sorted; ++i) mass += kept_[i].first;
    // Without top-k the nucleus is a share of the whole mass; min-p's cut is a probability.
    const bool nucleus_inside = options_.top_p < 1.0f && mass >= options_.top_p * total;
    const bool min_p_inside =
        options_.min_p > 0.0f && kept_[sorted - 1].first < options_.min_p * kept_[0].first;
    if (nucleus_inside || min_p_inside) return sorted;
  }
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
  // Softmax of logits / T, in a stable form.
  const double inv_t = 1.0 / options_.temperature;
  const float max_logit = kernels::max_of(work_.data(), static_cast<int64_t>(work_.size()));
  double total = 0;
  kept_.resize(work_.size());
  for (std::size_t i = 0; i < work_.size(); ++i) {
    const double p = std::exp((work_[i] - max_logit) * inv_t);
    kept_[i] = {p, static_cast<int32_t>(i)};
    total += p;
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
