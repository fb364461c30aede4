// A decode step's f32 attention over the KV cache, one KV head's group of query heads at a time:
// the products on the vector kernels of kernels_cached_attention.h, the row softmax and its masks
// attention_detail's, shared with the other paths. A group's keys may be split into parts that
// threads take apart (each part's softmax over its own keys, then combined), so that a model with
// fewer KV heads than threads still splits its attention.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <vector>

#include "autograd/kernels/kernels_attention.h"

namespace lora::kernels {
namespace {

namespace d = attention_detail;
constexpr float kHidden = -std::numeric_limits<float>::infinity();

// Below this many keys a part costs more to combine than it saves.
constexpr int64_t kMinPartKeys = 256;

// One part's result per query head of its group: the largest visible score (-inf if none), the
// sum of exp(score - largest), and the output row before division by that sum.
struct PartResult {
  float* out;    // group rows of head_dim
  float* top;    // group
  float* total;  // group
};

// The query heads of KV head kvh of sequence b against the keys in [j0, j1) only. `scores` holds
// group() rows of seq_k.
void attend_part(const float* q, const float* k, const float* v, const AttentionShape& s, int64_t b,
                 int64_t kvh, const uint8_t* key_valid, int64_t j0, int64_t j1, float* scores,
                 const PartResult& part, const gemv::Kernels& kernels) {
  const int64_t hd = s.head_dim, group = s.group();
  const int64_t kv_off = b * s.seq_k * s.kv_stride() + kvh * hd;
  const gemv::CachedHeadsArgs args{.q = q + b * s.seq_q * s.q_stride() + kvh * group * hd,
                                   .keys = k + kv_off,
                                   .values = v + kv_off,
                                   .kv_stride = s.kv_stride(),
                                   .head_dim = hd,
                                   .heads = group,
                                   .scores = scores,
                                   .ld = s.seq_k};
  kernels.cached_scores(args, j0, j1, static_cast<float>(s.score_scale()));
  for (int64_t h = 0; h < group; ++h) {
    float* p = scores + h * s.seq_k;
    if (s.softcap > 0) d::soft_cap(p + j0, j1 - j0, s.softcap, static_cast<float*>(nullptr));
    if (key_valid)
      for (int64_t j = j0; j < j1; ++j)
        if (!key_valid[b * s.seq_k + j]) p[j] = kHidden;
    const float top = j1 > j0 ? d::row_max(p + j0, j1 - j0) : kHidden;
    part.top[h] = top;
    if (top == kHidden) {  // nothing visible here: no weight on any value
      std::fill(p + j0, p + j1, 0.0f);
      part.total[h] = 0.0f;
    } else {
      part.total[h] = static_cast<float>(d::exp_shift(p + j0, j1 - j0, top));
    }
  }
  kernels.cached_values(args, j0, j1, part.out);
}

// The parts of one group, in key order, combined into its heads' output rows and log-sum-exps.
void combine_parts(const AttentionShape& s, int64_t b, int64_t kvh,
                   std::span<const PartResult> parts, float* out, float* lse) {
  const int64_t hd = s.head_dim, group = s.group();
  for (int64_t h = 0; h < group; ++h) {
    const int64_t head = kvh * group + h;
    float* o = out + b * s.seq_q * s.q_stride() + head * hd;
    float top = kHidden;
    for (const PartResult& p : parts) top = std::max(top, p.top[h]);
    float& lse_at = lse[(b * s.heads + head) * s.seq_q];
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

// Parts per group: enough for every thread to have work where the groups alone are too few.
int64_t parts_per_group(const AttentionShape& s, int64_t keys, bool split) {
  const int64_t groups = s.batch * s.kv_heads;
  if (!team_splits(split) || groups >= 2 * omp_get_max_threads()) return 1;
  const int64_t wanted = (2 * omp_get_max_threads() + groups - 1) / groups;
  return std::clamp<int64_t>(keys / kMinPartKeys, 1, wanted);
}

}  // namespace

void attention_forward_cached(const float* q, const float* k, const float* v,
                              const AttentionShape& s, const uint8_t* key_valid, float* out,
                              float* lse, const gemv::Kernels& kernels, int64_t parts) {
  const int64_t hd = s.head_dim, group = s.group(), count = d::block_keys(s, 0, 1);
  // Keys before the sliding window are hidden: no scores for them.
  const int64_t first = s.window > 0 ? std::max<int64_t>(0, count - s.window) : 0;
  const bool split = s.batch * s.heads * s.seq_k * hd >= kSingleQueryParallelWork;
  if (parts <= 0) parts = parts_per_group(s, count - first, split);
  const int64_t groups = s.batch * s.kv_heads, stride = group * (hd + 2);
  std::vector<float> results(static_cast<std::size_t>(groups * parts * stride));
  std::vector<PartResult> views;
  for (int64_t i = 0; i < groups * parts; ++i) {
    float* at = results.data() + i * stride;
    views.push_back({at, at + group * hd, at + group * (hd + 1)});
  }
  parallel_for_with_scratch(
      groups * parts, split,
      [&] { return std::vector<float>(static_cast<std::size_t>(group * s.seq_k)); },
      [&](std::vector<float>& scores, int64_t i) {
        const int64_t g = i / parts, part = i % parts;
        const int64_t j0 = first + (count - first) * part / parts;
        const int64_t j1 = first + (count - first) * (part + 1) / parts;
        attend_part(q, k, v, s, g / s.kv_heads, g % s.kv_heads, key_valid, j0, j1, scores.data(),
                    views[i], kernels);
      });
  for (int64_t g = 0; g < groups; ++g)
    combine_parts(s, g / s.kv_heads, g % s.kv_heads,
                  std::span<const PartResult>(views).subspan(g * parts, parts), out, lse);
}

}  // namespace lora::kernels
