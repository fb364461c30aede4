// A decode step's f32 attention over the KV cache: the products on the vector kernels of
// kernels_cached_attention.h (each KV head's query heads together), the row softmax and its masks
// attention_detail's, shared with the other paths. A sequence's keys go a block at a time through
// every KV head before the next block: a cached row holds all KV heads side by side, and read
// whole it streams from memory, where one head's slice of every row (a head's pass over the whole
// cache) leaves the rest of each line it fetches to be fetched again once the cache outgrows L2.
// The keys may also be split into parts that threads take apart (each part's softmax over its own
// keys, then combined), so that one sequence still splits.

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <span>
#include <tuple>
#include <vector>

#include "autograd/kernels/kernels_attention.h"

namespace lora::kernels {
namespace {

namespace d = attention_detail;
constexpr float kHidden = -std::numeric_limits<float>::infinity();

// Below this many keys a part costs more to combine than it saves.
constexpr int64_t kMinPartKeys = 256;
// Keys per pass through the KV heads: their rows stay in L2 until the last head has read its slice.
constexpr int64_t kRowBlock = 64;

// One part's result per query head: the largest visible score (-inf if none), the sum of
// exp(score - largest), and the output row before division by that sum.
struct PartResult {
  float* out;    // heads rows of head_dim
  float* top;    // heads
  float* total;  // heads
};

// The arguments of KV head kvh's kernels for sequence b; `scores` holds heads rows of seq_k.
gemv::CachedHeadsArgs group_args(const float* q, const CachedKV& kv, const AttentionShape& s,
                                 int64_t b, int64_t kvh, float* scores) {
  const int64_t hd = s.head_dim, group = s.group();
  const int64_t kv_off = b * s.seq_k * s.kv_stride() + kvh * hd;
  const bool half = kv.half_k != nullptr;
  return {.q = q + b * s.seq_q * s.q_stride() + kvh * group * hd,
          .keys = half ? nullptr : kv.k + kv_off,
          .values = half ? nullptr : kv.v + kv_off,
          .half_keys = half ? kv.half_k + kv_off : nullptr,
          .half_values = half ? kv.half_v + kv_off : nullptr,
          .kv_stride = s.kv_stride(),
          .cached = d::block_keys(s, 0, 1),
          .head_dim = hd,
          .heads = group,
          .scores = scores + kvh * group * s.seq_k,
          .ld = s.seq_k};
}

// One head's part [j0, j1) of a score row capped, masked and exponentiated from its maximum in
// place. Returns {maximum, sum}; a part with nothing visible is zeroed, {-inf, 0}.
std::pair<float, float> softmax_part(float* p, const AttentionShape& s, int64_t b,
                                     const uint8_t* key_valid, int64_t j0, int64_t j1) {
  if (s.softcap > 0) d::soft_cap(p + j0, j1 - j0, s.softcap, static_cast<float*>(nullptr));
  if (key_valid)
    for (int64_t j = j0; j < j1; ++j)
      if (!key_valid[b * s.seq_k + j]) p[j] = kHidden;
  const float top = j1 > j0 ? d::row_max(p + j0, j1 - j0) : kHidden;
  if (top == kHidden) {
    std::fill(p + j0, p + j1, 0.0f);
    return {kHidden, 0.0f};
  }
  return {top, static_cast<float>(d::exp_shift(p + j0, j1 - j0, top))};
}

// Every query head of sequence b against the keys in [j0, j1) only.
void attend_part(const float* q, const CachedKV& kv, const AttentionShape& s, int64_t b,
                 const uint8_t* key_valid, int64_t j0, int64_t j1, float* scores,
                 const PartResult& part, const gemv::Kernels& kernels) {
  const auto scale = static_cast<float>(s.score_scale());
  for (int64_t r = j0; r < j1; r += kRowBlock)
    for (int64_t kvh = 0; kvh < s.kv_heads; ++kvh)
      kernels.cached_scores(group_args(q, kv, s, b, kvh, scores), r, std::min(j1, r + kRowBlock),
                            scale);
  for (int64_t h = 0; h < s.heads; ++h)
    std::tie(part.top[h], part.total[h]) =
        softmax_part(scores + h * s.seq_k, s, b, key_valid, j0, j1);
  std::fill(part.out, part.out + s.heads * s.head_dim, 0.0f);
  for (int64_t r = j0; r < j1; r += kRowBlock)
    for (int64_t kvh = 0; kvh < s.kv_heads; ++kvh)
      kernels.cached_values(group_args(q, kv, s, b, kvh, scores), r, std::min(j1, r + kRowBlock),
                            part.out + kvh * s.group() * s.head_dim);
}

// One sequence's parts, in key order, combined into its heads' output rows and log-sum-exps.
void combine_parts(const AttentionShape& s, int64_t b, std::span<const PartResult> parts,
                   float* out, float* lse) {
  const int64_t hd = s.head_dim;
  for (int64_t h = 0; h < s.heads; ++h) {
    float* o = out + b * s.seq_q * s.q_stride() + h * hd;
    float top = kHidden;
    for (const PartResult& p : parts) top = std::max(top, p.top[h]);
    float& lse_at = lse[(b * s.heads + h) * s.seq_q];
    std::fill(o, o + hd, 0.0f);
    if (top == kHidden) {  // no visible key: output row zero
      lse_at = top;
      continue;
    }
    double total = 0;
    for (const PartResult& p : parts) {
      if (p.top[h] == kHidden) continue;
      const float weight = std::exp(p.top[h] - top);
      total += double(weight) * p.total[h];
      for (int64_t c = 0; c < hd; ++c) o[c] += weight * p.out[h * hd + c];
    }
    const float inv = static_cast<float>(1.0 / total);
    for (int64_t c = 0; c < hd; ++c) o[c] *= inv;
    lse_at = top + static_cast<float>(std::log(total));
  }
}

// Parts per sequence: enough for every thread to have work where the sequences alone are too few,
// and where it can be, a count that gives every thread as many parts (an even split of a step's
// parts is the thread team's static split).
int64_t parts_per_sequence(const AttentionShape& s, int64_t keys, bool split) {
  const int64_t threads = team_size();
  if (!team_splits(split) || s.batch >= 2 * threads) return 1;
  const int64_t most =
      std::clamp<int64_t>(keys / kMinPartKeys, 1, (2 * threads + s.batch - 1) / s.batch);
  for (int64_t parts = most; parts > 1; --parts)
    if (s.batch * parts % threads == 0) return parts;
  return most;
}

}  // namespace

bool cached_attention_fits(const AttentionShape& s, const gemv::Kernels& kernels) {
  return kernels.cached_scores != nullptr && s.head_dim % kernels.lanes == 0;
}

void attention_forward_cached(const float* q, const CachedKV& kv, const AttentionShape& s,
                              const uint8_t* key_valid, float* out, float* lse,
                              const gemv::Kernels& kernels, int64_t parts) {
  const int64_t hd = s.head_dim, count = d::block_keys(s, 0, 1);
  // Keys before the sliding window are hidden: no scores for them.
  const int64_t first = s.window > 0 ? std::max<int64_t>(0, count - s.window) : 0;
  const bool split = single_query_splits(s);
  if (parts <= 0) parts = parts_per_sequence(s, count - first, split);
  const int64_t items = s.batch * parts, stride = s.heads * (hd + 2);
  std::vector<float> results(static_cast<std::size_t>(items * stride));
  std::vector<PartResult> views;
  for (int64_t i = 0; i < items; ++i) {
    float* at = results.data() + i * stride;
    views.push_back({at, at + s.heads * hd, at + s.heads * (hd + 1)});
  }
  // Scores are written before they are read: no zeroing (a few hundred KiB a layer at long
  // contexts).
  parallel_for_with_scratch(
      items, split,
      [&] { return std::make_unique_for_overwrite<float[]>(std::size_t(s.heads * s.seq_k)); },
      [&](std::unique_ptr<float[]>& scores, int64_t i) {
        const int64_t part = i % parts;
        const int64_t j0 = first + (count - first) * part / parts;
        const int64_t j1 = first + (count - first) * (part + 1) / parts;
        attend_part(q, kv, s, i / parts, key_valid, j0, j1, scores.get(), views[i], kernels);
      });
  for (int64_t b = 0; b < s.batch; ++b)
    combine_parts(s, b, std::span<const PartResult>(views).subspan(b * parts, parts), out, lse);
}

}  // namespace lora::kernels
