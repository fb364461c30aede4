// Element types of stored tensors and the scalar conversions between them.
#pragma once
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace lora {

enum class DType { F32, F16, BF16, F64, I8, U8, I16, I32, U32, I64, BOOL };

// Bytes per element.
std::size_t dtype_size(DType t);
// The safetensors spelling ("F32", "BF16", ...).
std::string_view dtype_name(DType t);
std::optional<DType> dtype_from_name(std::string_view name);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
// Round to nearest even, NaN kept quiet (the rounding PyTorch and MLX use).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}
float f16_to_f32(uint16_t h);
// f16_to_f32 of every IEEE half, indexed by its bits: 256 KiB built on first use. The
// matrix-vector kernels read ggml block scales from it, a load where converting costs vector uops.
const float* f16_to_f32_table();
uint16_t f32_to_f16(float f);  // round to nearest even, overflow to inf

// Converts `n` elements of a float-like dtype (F32, F16, BF16, F64) to f32.
void convert_to_f32(DType t, const void* src, std::size_t n, float* dst);
// Converts f32 to a float-like dtype (F32, F16, BF16, F64).
void convert_from_f32(DType t, const float* src, std::size_t n, void* dst);

}  // namespace lora
