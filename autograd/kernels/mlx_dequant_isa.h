// The AVX-512 copy of the MLX 4-bit row widening (mlx_dequant_avx512.cpp, compiled with that
// set's flags). Call it only when active_cpu_features() (autograd/cpu_features.h) allows.
#pragma once
#include <cstdint>

namespace lora::mlx_avx512 {
// One row of 4-bit codes (two per byte, the even element in the low nibble) to f32: scale * q +
// bias per group of group_size values. cols and group_size are multiples of 32.
void dequantize_row4(const uint8_t* codes, const float* scales, const float* biases, int64_t cols,
                     int64_t group_size, float* out);
}  // namespace lora::mlx_avx512
