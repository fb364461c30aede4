// MLX affine quantization: w = scale * q + bias per group of `group_size` consecutive input
// elements of a row, q packed low bits first into uint32 words.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "autograd/dtype.h"

namespace lora {

struct QuantizedMatrix {
  int64_t rows = 0;     // out features
  int64_t cols = 0;     // in features (unpacked)
  int bits = 4;         // 2, 3, 4, 5, 6 or 8
  int group_size = 64;  // 32, 64 or 128
  // The dtype scales and biases are stored in on disk (F16, BF16 or F32); values below are already
  // rounded to it, so writing them back is exact.
  DType scale_dtype = DType::F32;
  std::vector<uint32_t> packed;  // rows * (cols * bits / 32)
  std::vector<float> scales;     // rows * (cols / group_size)
  std::vector<float> biases;     // rows * (cols / group_size)

  int64_t words_per_row() const { return cols * bits / 32; }
  int64_t groups_per_row() const { return cols / group_size; }
};

bool valid_quant_bits(int bits);
bool valid_group_size(int group_size);
// Whether a [rows, cols] matrix can be quantized with this group size (cols divisible by it and
// the packed row a whole number of uint32 words).
bool quantizable(int64_t cols, int bits, int group_size);

// MLX's quantizer, with scales and biases rounded to `scale_dtype` before q is computed.
QuantizedMatrix quantize(std::span<const float> w, int64_t rows, int64_t cols, int bits,
                         int group_size, DType scale_dtype = DType::F32);
// Dequantizes rows [row_begin, row_end) into out, [row_end - row_begin, cols] row-major.
void dequantize_rows(const QuantizedMatrix& q, int64_t row_begin, int64_t row_end, float* out);
std::vector<float> dequantize(const QuantizedMatrix& q);

// Bit layout helpers (exposed for tests): pack `values` (each < 2^bits) low bits first.
std::vector<uint32_t> pack_bits(std::span<const uint8_t> values, int bits);
std::vector<uint8_t> unpack_bits(std::span<const uint32_t> words, int64_t count, int bits);

}  // namespace lora
