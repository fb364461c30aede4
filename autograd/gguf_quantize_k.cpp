#include "autograd/gguf_quantize_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "autograd/dtype.h"
#include "autograd/gguf_quant.h"

namespace lora {

namespace {

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

float get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// Round half to even, as llama.cpp's quantizers round (nearest_int), then clamp.
int nearest(float v, int lo, int hi) {
  const float bounded = std::clamp(v, static_cast<float>(lo - 1), static_cast<float>(hi + 1));
  return std::clamp(static_cast<int>(std::lrint(bounded)), lo, hi);
}

// The step and offset of one sub-block of n (at most 32), x ~ step * q + low with q in [0, top]
// and low <= 0, found as llama.cpp's quantizer finds them: candidate steps around the range's
// (top + shift steps over the range, shift from `first` by `stride`, `tries` of them); for each,
// the codes to nearest and then the step and offset refitted by least squares weighted by w; the
// candidate of least weighted error (squared, or absolute with `mad`) wins.
struct AffineFit {
  float step = 0, low = 0;
};
struct AffineSearch {
  int top;
  float first, stride;
  int tries;
  bool mad;
};
AffineFit fit_affine(const float* x, int n, const float* w, const AffineSearch& search) {
  const int top = search.top;
  const float lo = std::min(0.0f, *std::min_element(x, x + n));
  const float hi = *std::max_element(x, x + n);
  if (hi == lo) return {0.0f, lo};
  float sum_w = 0, sum_wx = 0;
  for (int i = 0; i < n; ++i) {
    sum_w += w[i];
    sum_wx += w[i] * x[i];
  }
  // The weighted error of codes to nearest at 1/inv steps from lo, refitted or not.
  auto try_step = [&](float inv, AffineFit* refit) {
    float q[32], sl = 0, sl2 = 0, sxl = 0;
    for (int i = 0; i < n; ++i) {
      q[i] = static_cast<float>(nearest(inv * (x[i] - lo), 0, top));
      sl += w[i] * q[i];
      sl2 += w[i] * q[i] * q[i];
      sxl += w[i] * q[i] * x[i];
    }
    AffineFit f{1.0f / inv, lo};
    if (refit) {
      const float det = sum_w * sl2 - sl * sl;
      if (det <= 0) return INFINITY;
      f = {(sum_w * sxl - sum_wx * sl) / det, (sl2 * sum_wx - sl * sxl) / det};
      if (f.low > 0) f = {sxl / sl2, 0.0f};  // the offset may only lower the codes' range
      *refit = f;
    }
    float e = 0;
    for (int i = 0; i < n; ++i) {
      const float d = f.step * q[i] + f.low - x[i];
      e += w[i] * (search.mad ? std::fabs(d) : d * d);
    }
    return e;
  };
  AffineFit best{(hi - lo) / static_cast<float>(top), lo};
  float best_error = try_step(static_cast<float>(top) / (hi - lo), nullptr);
  for (int t = 0; t <= search.tries; ++t) {
    AffineFit f;
    const float e =
        try_step((search.first + search.stride * static_cast<float>(t) + static_cast<float>(top)) /
                     (hi - lo),
                 &f);
    if (e < best_error) {
      best_error = e;
      best = f;
    }
  }
  return best;
}

// The step of one Q6_K sub-block of 16, x ~ step * q with q in [-32, 31]: the extreme value on
// code -32 (a negative step when it is positive), then, as llama.cpp's quantizer does, 19 steps
// around it (the extreme on -32 + k/10, k in [-9, 9]), codes to nearest, each step refitted by
// least squares weighted by x^2; the one explaining most of the weighted energy wins.
float fit_symmetric(const float* x) {
  float max = 0;
  for (int i = 0; i < 16; ++i)
    if (std::fabs(x[i]) > std::fabs(max)) max = x[i];
  if (std::fabs(max) < 1e-15f) return 0.0f;
  float best_step = max / -32.0f, best_gain = -1;
  for (int k : {0, -9, -8, -7, -6, -5, -4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
    const float inv = -(32.0f + 0.1f * static_cast<float>(k)) / max;
    float sxl = 0, sl2 = 0;
    for (int i = 0; i < 16; ++i) {
      const float q = static_cast<float>(nearest(inv * x[i], -32, 31)), w = x[i] * x[i];
      sxl += w * x[i] * q;
      sl2 += w * q * q;
    }
    // The refitted step sxl / sl2 leaves an error of sum(w x^2) - sxl^2 / sl2.
    if (sl2 > 0 && sxl * sxl / sl2 > best_gain) {
      best_gain = sxl * sxl / sl2;
      best_step = sxl / sl2;
    }
  }
  return best_step;
}

// The step of one Q3_K sub-block of 16, x ~ step * q with q in [-4, 3], as llama.cpp's quantizer
// finds it: the extreme value on code -4, then up to 5 passes that move single codes where the
// least-squares step (weights x^2) then explains more of the weighted energy. Codes go to `q`
// (shifted to [0, 7]).
float fit_q3_step(const float* x, int8_t* q) {
  float max = 0, amax = 0;
  for (int i = 0; i < 16; ++i)
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  if (amax < 1e-15f) {
    std::memset(q, 0, 16);
    return 0.0f;
  }
  const float inv = -4.0f / max;
  float sxl = 0, sl2 = 0;
  for (int i = 0; i < 16; ++i) {
    q[i] = static_cast<int8_t>(nearest(inv * x[i], -4, 3));
    const float w = x[i] * x[i];
    sxl += w * x[i] * static_cast<float>(q[i]);
    sl2 += w * static_cast<float>(q[i]) * static_cast<float>(q[i]);
  }
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < 16; ++i) {
      const float w = x[i] * x[i], l = static_cast<float>(q[i]);
      float slx = sxl - w * x[i] * l;
      if (slx <= 0) continue;
      float sl2_i = sl2 - w * l * l;
      const int moved = nearest(x[i] * sl2_i / slx, -4, 3);
      if (moved == q[i]) continue;
      slx += w * x[i] * static_cast<float>(moved);
      sl2_i += w * static_cast<float>(moved) * static_cast<float>(moved);
      if (sl2_i > 0 && slx * slx * sl2 > sxl * sxl * sl2_i) {
        q[i] = static_cast<int8_t>(moved);
        sxl = slx;
        sl2 = sl2_i;
        ++changed;
      }
    }
    if (changed == 0) break;
  }
  for (int i = 0; i < 16; ++i) q[i] = static_cast<int8_t>(q[i] + 4);
  return sl2 > 0 ? sxl / sl2 : 0.0f;
}

// Q4_K/Q5_K: x ~ d * sc_j * q - dmin * m_j on sub-block j of 32, q in [0, top].
void quantize_affine_k(const float* x, int top, uint8_t* b, uint8_t* qh, uint8_t* qs) {
  float scale[8], minus[8];
  for (int j = 0; j < 8; ++j) {
    // Weights rms(x) + |x|; llama.cpp's search ranges: Q4_K 21 candidates from -1 by 0.1, Q5_K
    // 16 from -0.5.
    const float* s = x + 32 * j;
    float w[32], sum_x2 = 0;
    for (int i = 0; i < 32; ++i) sum_x2 += s[i] * s[i];
    const float rms = std::sqrt(sum_x2 / 32.0f);
    for (int i = 0; i < 32; ++i) w[i] = rms + std::fabs(s[i]);
    const AffineFit f = fit_affine(s, 32, w,
                                   top == 15 ? AffineSearch{top, -1.0f, 0.1f, 20, false}
                                             : AffineSearch{top, -0.5f, 0.1f, 15, false});
    scale[j] = f.step;
    minus[j] = -f.low;
  }
  const float max_scale = *std::max_element(scale, scale + 8),
              max_min = *std::max_element(minus, minus + 8);
  put_f16(b, max_scale / 63.0f);
  put_f16(b + 2, max_min / 63.0f);
  const float d = get_f16(b), dmin = get_f16(b + 2);  // as stored: the codes fit these
  int sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = max_scale > 0 ? nearest(63.0f / max_scale * scale[j], 0, 63) : 0;
    mn[j] = max_min > 0 ? nearest(63.0f / max_min * minus[j], 0, 63) : 0;
  }
  uint8_t* s = b + 4;  // the 12 packed bytes, the inverse of the decoder's layout
  for (int j = 0; j < 4; ++j) {
    s[j] = static_cast<uint8_t>((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    s[j + 4] = static_cast<uint8_t>((mn[j] & 63) | ((mn[j + 4] >> 4) << 6));
    s[j + 8] = static_cast<uint8_t>((sc[j + 4] & 15) | ((mn[j + 4] & 15) << 4));
  }
  if (qh) std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) {
      int q[2];
      for (int half = 0; half < 2; ++half) {
        const int j = 2 * c + half;
        const float step = d * static_cast<float>(sc[j]);
        const float v = x[64 * c + 32 * half + l] + dmin * static_cast<float>(mn[j]);
        q[half] = step > 0 ? nearest(v / step, 0, top) : 0;
        if (qh && q[half] > 15) qh[l] = static_cast<uint8_t>(qh[l] | (1 << j));
      }
      qs[32 * c + l] = static_cast<uint8_t>((q[0] & 15) | ((q[1] & 15) << 4));
    }
}

// The kIq4Values level nearest v (the lower one on a tie), by bisection.
int nearest_iq4_level(float v) {
  const int8_t* levels = kIq4Values;
  if (v <= levels[0]) return 0;
  if (v >= levels[15]) return 15;
  int lo = 0, hi = 15;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    (v < levels[mid] ? hi : lo) = mid;
  }
  return v - levels[lo] < levels[hi] - v ? lo : hi;
}

// The weighted least-squares scale of 32 values rounded at `inv_step` to the levels: the sums
// sum(w q x) and sum(w q^2), q a level.
struct LevelFit {
  float qx = 0, q2 = 0;
};
LevelFit fit_levels(const float* x, float inv_step) {
  LevelFit f;
  for (int j = 0; j < 32; ++j) {
    const float q = kIq4Values[nearest_iq4_level(inv_step * x[j])], w = x[j] * x[j];
    f.qx += w * q * x[j];
    f.q2 += w * q * q;
  }
  return f;
}

// One 32-element block's IQ4 scale: the extreme value on the end level (-127), then fifteen
// steps around it, each refitted; the candidate of least weighted squared error wins (the largest
// qx^2 / q2). 0 for a block of zeros.
float search_iq4_scale(const float* x) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j)
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  if (amax < 1e-15f) return 0;
  constexpr int kTries = 7;
  const float first_step = -max / static_cast<float>(kIq4Values[0]);
  LevelFit f = fit_levels(x, 1 / first_step);
  float d = f.q2 > 0 ? f.qx / f.q2 : 0.0f, best = d * f.qx;
  for (int shift = -kTries; shift <= kTries; ++shift) {
    f = fit_levels(x, static_cast<float>(shift + kIq4Values[0]) / max);
    if (f.q2 > 0 && f.qx * f.qx > best * f.q2) {
      d = f.qx / f.q2;
      best = d * f.qx;
    }
  }
  return d;
}

// Codes of 32 values at `inv_step`, packed as the Q4_0 layout packs them.
void put_iq4_codes(const float* x, float inv_step, uint8_t* qs) {
  for (int j = 0; j < 16; ++j)
    qs[j] = static_cast<uint8_t>(nearest_iq4_level(inv_step * x[j]) |
                                 nearest_iq4_level(inv_step * x[j + 16]) << 4);
}

}  // namespace

// Q2_K: x ~ d * sc_j * q - dmin * m_j on sub-block j of 16, sc_j and m_j 4 bits, q in [0, 3].
// llama.cpp's search: weights |x|, absolute error, 16 candidates from -0.5 by 0.1.
void quantize_q2_k_block(const float* x, uint8_t* block) {
  float scale[16], minus[16];
  for (int j = 0; j < 16; ++j) {
    float w[16];
    for (int i = 0; i < 16; ++i) w[i] = std::fabs(x[16 * j + i]);
    const AffineFit f = fit_affine(x + 16 * j, 16, w, AffineSearch{3, -0.5f, 0.1f, 15, true});
    scale[j] = f.step;
    minus[j] = -f.low;
  }
  const float max_scale = std::max(0.0f, *std::max_element(scale, scale + 16)),
              max_min = std::max(0.0f, *std::max_element(minus, minus + 16));
  int sc[16], mn[16];
  for (int j = 0; j < 16; ++j) {
    sc[j] = max_scale > 0 ? nearest(15.0f / max_scale * scale[j], 0, 15) : 0;
    mn[j] = max_min > 0 ? nearest(15.0f / max_min * minus[j], 0, 15) : 0;
    block[j] = static_cast<uint8_t>(sc[j] | (mn[j] << 4));
  }
  put_f16(block + 80, max_scale > 0 ? max_scale / 15.0f : 0.0f);
  put_f16(block + 82, max_min > 0 ? max_min / 15.0f : 0.0f);
  const float d = get_f16(block + 80), dmin = get_f16(block + 82);
  uint8_t* qs = block + 16;
  std::memset(qs, 0, 64);
  // Element i = 128 * half + 32 * j + r sits in qs[32 * half + r], bits 2j (sub-block i / 16).
  for (int i = 0; i < 256; ++i) {
    const float step = d * static_cast<float>(sc[i / 16]);
    const float v = x[i] + dmin * static_cast<float>(mn[i / 16]);
    const int q = step > 0 ? nearest(v / step, 0, 3) : 0;
    const int half = i / 128, j = (i % 128) / 32, r = i % 32;
    qs[32 * half + r] = static_cast<uint8_t>(qs[32 * half + r] | (q << (2 * j)));
  }
}

// Q3_K: x ~ d * (sc_j - 32) * (q - 4) on sub-block j of 16, sc_j 6 bits, q in [0, 7]. The block
// is hmask[32] (bit j / 32 of byte j % 32: the code's third bit), qs[64] (two bits each), the 16
// scales packed in 12 bytes (low nibbles in 0-7, high bit pairs in 8-11) and d (f16).
void quantize_q3_k_block(const float* x, uint8_t* block) {
  int8_t q[256];
  float scale[16], max_scale = 0, amax_scale = 0;
  for (int j = 0; j < 16; ++j) {
    scale[j] = fit_q3_step(x + 16 * j, q + 16 * j);
    if (std::fabs(scale[j]) > amax_scale) {
      amax_scale = std::fabs(scale[j]);
      max_scale = scale[j];
    }
  }
  uint8_t* packed = block + 96;
  std::memset(packed, 0, 12);
  int sc[16] = {};
  if (max_scale != 0) {
    const float inv = -32.0f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int l = nearest(inv * scale[j], -32, 31) + 32;
      packed[j % 8] = static_cast<uint8_t>(packed[j % 8] | ((l & 15) << (j < 8 ? 0 : 4)));
      packed[8 + j % 4] = static_cast<uint8_t>(packed[8 + j % 4] | ((l >> 4) << (2 * (j / 4))));
      sc[j] = l - 32;
    }
    put_f16(block + 108, 1.0f / inv);
  } else {
    put_f16(block + 108, 0.0f);
  }
  const float d = get_f16(block + 108);
  for (int j = 0; j < 16; ++j) {
    const float step = d * static_cast<float>(sc[j]);
    if (step == 0) continue;  // the sub-block keeps its searched codes
    for (int i = 16 * j; i < 16 * j + 16; ++i)
      q[i] = static_cast<int8_t>(nearest(x[i] / step, -4, 3) + 4);
  }
  uint8_t* hmask = block;
  uint8_t* qs = block + 32;
  std::memset(hmask, 0, 32);
  for (int i = 0; i < 256; ++i)
    if (q[i] > 3) {
      hmask[i % 32] = static_cast<uint8_t>(hmask[i % 32] | (1 << (i / 32)));
      q[i] = static_cast<int8_t>(q[i] - 4);
    }
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const int8_t* p = q + 128 * h;
      qs[32 * h + l] =
          static_cast<uint8_t>(p[l] | (p[l + 32] << 2) | (p[l + 64] << 4) | (p[l + 96] << 6));
    }
}

void quantize_q4_k_block(const float* x, uint8_t* block) {
  quantize_affine_k(x, 15, block, nullptr, block + 16);
}

void quantize_q5_k_block(const float* x, uint8_t* block) {
  quantize_affine_k(x, 31, block, block + 16, block + 48);
}

// Q6_K: x ~ d * sc_j * (q - 32) on sub-block j of 16, sc_j int8, q in [0, 63].
void quantize_q6_k_block(const float* x, uint8_t* block) {
  float scale[16];
  for (int j = 0; j < 16; ++j) scale[j] = fit_symmetric(x + 16 * j);
  float max_scale = 0, amax_scale = 0;
  for (float s : scale)
    if (std::fabs(s) > amax_scale) {
      amax_scale = std::fabs(s);
      max_scale = s;
    }
  const float inv = amax_scale < 1e-15f ? 0.0f : -128.0f / max_scale;
  put_f16(block + 208, inv != 0 ? 1.0f / inv : 0.0f);
  const float d = get_f16(block + 208);
  auto* sc = reinterpret_cast<int8_t*>(block + 192);
  for (int j = 0; j < 16; ++j) sc[j] = static_cast<int8_t>(nearest(inv * scale[j], -128, 127));
  uint8_t q[256];
  for (int i = 0; i < 256; ++i) {
    const float step = d * static_cast<float>(sc[i / 16]);
    q[i] = static_cast<uint8_t>(step != 0 ? nearest(x[i] / step, -32, 31) + 32 : 32);
  }
  uint8_t* ql = block;
  uint8_t* qh = block + 128;
  for (int h = 0; h < 2; ++h)
    for (int l = 0; l < 32; ++l) {
      const uint8_t* p = q + 128 * h;
      ql[64 * h + l] = static_cast<uint8_t>((p[l] & 15) | ((p[64 + l] & 15) << 4));
      ql[64 * h + 32 + l] = static_cast<uint8_t>((p[32 + l] & 15) | ((p[96 + l] & 15) << 4));
      qh[32 * h + l] = static_cast<uint8_t>((p[l] >> 4) | ((p[32 + l] >> 4) << 2) |
                                            ((p[64 + l] >> 4) << 4) | ((p[96 + l] >> 4) << 6));
    }
}

// IQ4_NL: d (f16) and 16 code bytes; codes are rounded at the unrounded scale, as llama-quantize
// rounds them.
void quantize_iq4_nl_block(const float* x, uint8_t* block) {
  const float d = search_iq4_scale(x);
  put_f16(block, d);
  put_iq4_codes(x, d != 0 ? 1 / d : 0.0f, block + 2);
}

// IQ4_XS: d (f16), scales_h (2 bytes), scales_l (4), 8 x 16 code bytes. The sub-block scales
// are stored as l - 32 steps of d = -(the largest scale) / 32, and each sub-block's codes rounded
// again at d * l (with d unrounded).
void quantize_iq4_xs_block(const float* x, uint8_t* block) {
  float scale[8];
  float max_scale = 0, amax_scale = 0;
  for (int s = 0; s < 8; ++s) {
    scale[s] = search_iq4_scale(x + 32 * s);
    if (std::fabs(scale[s]) > amax_scale) {
      amax_scale = std::fabs(scale[s]);
      max_scale = scale[s];
    }
  }
  const float d = -max_scale / 32, inv = d != 0 ? 1 / d : 0.0f;
  put_f16(block, d);
  uint16_t high_bits = 0;
  std::fill(block + 4, block + 8, uint8_t{0});
  for (int s = 0; s < 8; ++s) {
    const int l = nearest(inv * scale[s], -32, 31);
    const float step = d * static_cast<float>(l);
    put_iq4_codes(x + 32 * s, step != 0 ? 1 / step : 0.0f, block + 8 + 16 * s);
    const int stored = l + 32;
    block[4 + s / 2] |= static_cast<uint8_t>((stored & 15) << (4 * (s % 2)));
    high_bits |= static_cast<uint16_t>((stored >> 4) << (2 * s));
  }
  std::memcpy(block + 2, &high_bits, 2);
}

}  // namespace lora
