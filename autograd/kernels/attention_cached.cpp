// A decode step's f32 attention over the KV cache, one KV head's group of query heads at a time:
// the products on the vector kernels of kernels_cached_attention.h, the row softmax and its masks
// attention_detail's, shared with the other paths.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "autograd/kernels/kernels_attention.h"

namespace lora::kernels {

void attend_cached_heads(const float* q, const float* k, const float* v, const AttentionShape& s,
                         int64_t b, int64_t kvh, const uint8_t* key_valid, float* scores,
                         float* out, float* lse, const gemv::Kernels& kernels) {
  namespace d = attention_detail;
  const int64_t hd = s.head_dim, group = s.group(), h0 = kvh * group;
  const int64_t count = d::block_keys(s, 0, 1);
  // Keys before the sliding window are hidden: no scores for them.
  const int64_t first = s.window > 0 ? std::max<int64_t>(0, count - s.window) : 0;
  const int64_t row = b * s.seq_q * s.q_stride() + h0 * hd;
  const int64_t kv_off = b * s.seq_k * s.kv_stride() + kvh * hd;
  const gemv::CachedHeadsArgs args{.q = q + row,
                                   .keys = k + kv_off,
                                   .values = v + kv_off,
                                   .kv_stride = s.kv_stride(),
                                   .head_dim = hd,
                                   .heads = group,
                                   .scores = scores,
                                   .ld = s.seq_k};
  kernels.cached_scores(args, first, count, static_cast<float>(s.score_scale()));
  std::vector<float> inv(static_cast<std::size_t>(group));
  for (int64_t h = 0; h < group; ++h) {
    float* p = scores + h * s.seq_k;
    if (s.softcap > 0)
      d::soft_cap(p + first, count - first, s.softcap, static_cast<float*>(nullptr));
    const int64_t limit = d::mask_row(p, s, b, 0, count, key_valid);
    const float mx = d::row_max(p + first, limit - first);
    float& lse_at = lse[(b * s.heads + h0 + h) * s.seq_q];
    if (mx == -std::numeric_limits<float>::infinity()) {  // no visible key: output row zero
      std::fill(p + first, p + count, 0.0f);
      lse_at = mx;
      inv[h] = 0.0f;
      continue;
    }
    const double sum = d::exp_shift(p + first, limit - first, mx);
    inv[h] = static_cast<float>(1.0 / sum);
    lse_at = mx + static_cast<float>(std::log(sum));
  }
  float* o = out + row;
  kernels.cached_values(args, first, count, o);
  for (int64_t h = 0; h < group; ++h)
    for (int64_t c = 0; c < hd; ++c) o[h * hd + c] *= inv[h];
}

}  // namespace lora::kernels
