#include "autograd/dtype.h"

#include <array>
#include <cmath>
#include <stdexcept>
#include <vector>

namespace lora {

namespace {
struct DTypeEntry {
  DType type;
  std::string_view name;
  std::size_t size;
};
constexpr std::array<DTypeEntry, 11> kDTypes{{{DType::F32, "F32", 4},
                                              {DType::F16, "F16", 2},
                                              {DType::BF16, "BF16", 2},
                                              {DType::F64, "F64", 8},
                                              {DType::I8, "I8", 1},
                                              {DType::U8, "U8", 1},
                                              {DType::I16, "I16", 2},
                                              {DType::I32, "I32", 4},
                                              {DType::U32, "U32", 4},
                                              {DType::I64, "I64", 8},
                                              {DType::BOOL, "BOOL", 1}}};
const DTypeEntry& entry(DType t) {
  for (const auto& e : kDTypes)
    if (e.type == t) return e;
  throw std::logic_error("unknown dtype");
}
}  // namespace

std::size_t dtype_size(DType t) { return entry(t).size; }
std::string_view dtype_name(DType t) { return entry(t).name; }
std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& e : kDTypes)
    if (e.name == name) return e.type;
  return std::nullopt;
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: renormalize
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      bits = sign | uint32_t(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | mant << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

const float* f16_to_f32_table() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = f16_to_f32(static_cast<uint16_t>(h));
    return t;
  }();
  return table.data();
}

uint16_t f32_to_f16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
  uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u) return uint16_t(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // rounds to inf
  if (abs < 0x38800000u) {  // subnormal or zero in f16: round at 2^-24 resolution
    float a;
    std::memcpy(&a, &abs, 4);
    return uint16_t(sign | uint16_t(std::nearbyint(a * 16777216.0f)));
  }
  uint32_t e = ((abs >> 23) - 127 + 15);
  uint32_t m = abs & 0x7fffffu;
  uint32_t half = (e << 10) | (m >> 13);
  uint32_t rest = m & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;  // ties to even
  return uint16_t(sign | half);
}

void convert_to_f32(DType t, const void* src, std::size_t n, float* dst) {
  switch (t) {
    case DType::F32:
      // An empty tensor may come with null pointers, which memcpy must never see.
      if (n > 0) std::memcpy(dst, src, n * 4);
      return;
    case DType::F16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(s[i]);
      return;
    }
    case DType::BF16: {
      auto* s = static_cast<const uint16_t*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(s[i]);
      return;
    }
    case DType::F64: {
      auto* s = static_cast<const double*>(src);
      for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(s[i]);
      return;
    }
    default:
      throw std::invalid_argument("cannot read dtype " + std::string(dtype_name(t)) + " as float");
  }
}

void convert_from_f32(DType t, const float* src, std::size_t n, void* dst) {
  switch (t) {
    case DType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case DType::F16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_f16(src[i]);
      return;
    }
    case DType::BF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(src[i]);
      return;
    }
    case DType::F64: {
      auto* d = static_cast<double*>(dst);
      for (std::size_t i = 0; i < n; ++i) d[i] = src[i];
      return;
    }
    default:
      throw std::invalid_argument("cannot write dtype " + std::string(dtype_name(t)) +
                                  " from float");
  }
}

}  // namespace lora
