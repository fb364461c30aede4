#include "autograd/gguf_quantize_k.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "autograd/dtype.h"

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

int nearest(float v, int lo, int hi) {
  return std::clamp(static_cast<int>(std::lround(v)), lo, hi);
}

// Q4_K/Q5_K: x ~ d * sc_j * q - dmin * m_j on sub-block j of 32, q in [0, top].
void quantize_affine_k(const float* x, int top, uint8_t* b, uint8_t* qh, uint8_t* qs) {
  float scale[8], minus[8];
  for (int j = 0; j < 8; ++j) {
    const float* s = x + 32 * j;
    const float lo = std::min(0.0f, *std::min_element(s, s + 32));
    const float hi = *std::max_element(s, s + 32);
    scale[j] = (hi - lo) / static_cast<float>(top);
    minus[j] = -lo;
  }
  const float max_scale = *std::max_element(scale, scale + 8),
              max_min = *std::max_element(minus, minus + 8);
  put_f16(b, max_scale / 63.0f);
  put_f16(b + 2, max_min / 63.0f);
  const float d = get_f16(b), dmin = get_f16(b + 2);  // as stored: the codes fit these
  int sc[8], mn[8];
  for (int j = 0; j < 8; ++j) {
    sc[j] = d > 0 ? nearest(scale[j] / d, 0, 63) : 0;
    mn[j] = dmin > 0 ? nearest(minus[j] / dmin, 0, 63) : 0;
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

}  // namespace

void quantize_q4_k_block(const float* x, uint8_t* block) {
  quantize_affine_k(x, 15, block, nullptr, block + 16);
}

void quantize_q5_k_block(const float* x, uint8_t* block) {
  quantize_affine_k(x, 31, block, block + 16, block + 48);
}

// Q6_K: x ~ d * sc_j * (q - 32) on sub-block j of 16, sc_j int8, q in [0, 63].
void quantize_q6_k_block(const float* x, uint8_t* block) {
  float scale[16];
  for (int j = 0; j < 16; ++j) {
    float amax = 0, max = 0;
    for (int i = 0; i < 16; ++i)
      if (std::fabs(x[16 * j + i]) > amax) {
        amax = std::fabs(x[16 * j + i]);
        max = x[16 * j + i];
      }
    scale[j] = max / -32.0f;  // the extreme lands on code 0, the other side within 31 steps
  }
  float max_scale = 0, amax_scale = 0;
  for (float s : scale)
    if (std::fabs(s) > amax_scale) {
      amax_scale = std::fabs(s);
      max_scale = s;
    }
  put_f16(block + 208, max_scale / -128.0f);
  const float d = get_f16(block + 208);
  auto* sc = reinterpret_cast<int8_t*>(block + 192);
  for (int j = 0; j < 16; ++j)
    sc[j] = static_cast<int8_t>(d != 0 ? nearest(scale[j] / d, -128, 127) : 0);
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

}  // namespace lora
