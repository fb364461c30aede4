#include "autograd/quant.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "autograd/cpu_features.h"
#include "autograd/kernels/mlx_dequant_isa.h"
#include "autograd/parallel.h"

namespace lora {

namespace {

// The value a float takes once stored as `t` (scales and biases are kept in the model dtype).
float round_to_dtype(float v, DType t) {
  switch (t) {
    case DType::F32:
      return v;
    case DType::F16:
      return f16_to_f32(f32_to_f16(v));
    case DType::BF16:
      return bf16_to_f32(f32_to_bf16(v));
    default:
      throw std::invalid_argument("quantization scales must be F32, F16 or BF16, not " +
                                  std::string(dtype_name(t)));
  }
}

// Reads the `bits`-wide value that starts at bit `bit` of a little-endian stream of words. A value
// can straddle two words (3, 5 and 6 bits), so read a 64-bit window.
inline uint32_t extract_bits(const uint32_t* words, int64_t total_words, int64_t bit, int bits) {
  const int64_t w = bit >> 5;
  const int shift = static_cast<int>(bit & 31);
  uint64_t window = words[w];
  if (shift + bits > 32 && w + 1 < total_words) window |= uint64_t(words[w + 1]) << 32;
  return static_cast<uint32_t>((window >> shift) & ((uint64_t(1) << bits) - 1));
}

}  // namespace

bool valid_quant_bits(int bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 5 || bits == 6 || bits == 8;
}

bool valid_group_size(int group_size) {
  return group_size == 32 || group_size == 64 || group_size == 128;
}

bool quantizable(int64_t cols, int bits, int group_size) {
  return valid_quant_bits(bits) && valid_group_size(group_size) && cols > 0 &&
         cols % group_size == 0 && (cols * bits) % 32 == 0;
}

std::vector<uint32_t> pack_bits(std::span<const uint8_t> values, int bits) {
  if (!valid_quant_bits(bits)) throw std::invalid_argument("pack_bits: bad bit width");
  const int64_t total_bits = static_cast<int64_t>(values.size()) * bits;
  std::vector<uint32_t> words(static_cast<std::size_t>((total_bits + 31) / 32), 0u);
  const uint32_t mask = (1u << bits) - 1;
  int64_t bit = 0;
  for (uint8_t v : values) {
    if (v > mask) throw std::invalid_argument("pack_bits: value does not fit the bit width");
    const uint64_t shifted = uint64_t(v) << (bit & 31);
    const std::size_t w = static_cast<std::size_t>(bit >> 5);
    words[w] |= static_cast<uint32_t>(shifted);
    if ((shifted >> 32) != 0) words[w + 1] |= static_cast<uint32_t>(shifted >> 32);
    bit += bits;
  }
  return words;
}

std::vector<uint8_t> unpack_bits(std::span<const uint32_t> words, int64_t count, int bits) {
  if (!valid_quant_bits(bits)) throw std::invalid_argument("unpack_bits: bad bit width");
  if (count < 0 || count * bits > static_cast<int64_t>(words.size()) * 32)
    throw std::invalid_argument("unpack_bits: not enough words for the count");
  std::vector<uint8_t> values(static_cast<std::size_t>(count));
  const auto n_words = static_cast<int64_t>(words.size());
  for (int64_t i = 0; i < count; ++i)
    values[static_cast<std::size_t>(i)] =
        static_cast<uint8_t>(extract_bits(words.data(), n_words, i * bits, bits));
  return values;
}

QuantizedMatrix quantize(std::span<const float> w, int64_t rows, int64_t cols, int bits,
                         int group_size, DType scale_dtype) {
  if (!valid_quant_bits(bits))
    throw std::invalid_argument("quantize: bits must be 2, 3, 4, 5, 6 or 8, got " +
                                std::to_string(bits));
  if (!valid_group_size(group_size))
    throw std::invalid_argument("quantize: group size must be 32, 64 or 128, got " +
                                std::to_string(group_size));
  if (rows < 0 || !quantizable(cols, bits, group_size))
    throw std::invalid_argument("quantize: input size " + std::to_string(cols) +
                                " is not a multiple of the group size " +
                                std::to_string(group_size));
  if (static_cast<int64_t>(w.size()) != rows * cols)
    throw std::invalid_argument("quantize: " + std::to_string(w.size()) + " values for a [" +
                                std::to_string(rows) + ", " + std::to_string(cols) + "] matrix");
  round_to_dtype(0.0f, scale_dtype);  // rejects a non-float scale dtype up front

  QuantizedMatrix q;
  q.rows = rows;
  q.cols = cols;
  q.bits = bits;
  q.group_size = group_size;
  q.scale_dtype = scale_dtype;
  const int64_t groups = q.groups_per_row();
  q.scales.resize(static_cast<std::size_t>(rows * groups));
  q.biases.resize(static_cast<std::size_t>(rows * groups));
  q.packed.assign(static_cast<std::size_t>(rows * q.words_per_row()), 0u);

  const float n_bins = static_cast<float>((1 << bits) - 1);
  std::vector<uint8_t> codes(static_cast<std::size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w.data() + r * cols;
    for (int64_t g = 0; g < groups; ++g) {
      const float* x = row + g * group_size;
      const auto [lo_it, hi_it] = std::minmax_element(x, x + group_size);
      const float lo = *lo_it, hi = *hi_it;
      // MLX's rule: anchor the grid on the endpoint of larger magnitude so it is represented
      // exactly (q = 0 there); the scale is negative when that endpoint is the max.
      const bool edge_is_min = std::fabs(lo) > std::fabs(hi);
      float scale = std::max((hi - lo) / n_bins, 1e-7f);
      if (!edge_is_min) scale = -scale;
      const float edge = edge_is_min ? lo : hi;
      const float q0 = std::rint(edge / scale);
      if (q0 != 0.0f) scale = edge / q0;
      scale = round_to_dtype(scale, scale_dtype);
      const float bias = round_to_dtype(edge, scale_dtype);
      const auto gi = static_cast<std::size_t>(r * groups + g);
      q.scales[gi] = scale;
      q.biases[gi] = bias;
      for (int64_t i = 0; i < group_size; ++i) {
        const float v = std::clamp(std::rint((x[i] - bias) / scale), 0.0f, n_bins);
        codes[static_cast<std::size_t>(g * group_size + i)] = static_cast<uint8_t>(v);
      }
    }
    const auto packed_row = pack_bits(codes, bits);
    std::copy(packed_row.begin(), packed_row.end(), q.packed.begin() + r * q.words_per_row());
  }
  return q;
}

namespace {

// Row r of q into dst (q.cols values); `wide`: the AVX-512 widening applies to this matrix.
void dequantize_row(const QuantizedMatrix& q, int64_t r, bool wide, float* dst) {
  const int64_t wpr = q.words_per_row();
  const int64_t groups = q.groups_per_row();
  const uint32_t* words = q.packed.data() + r * wpr;
  const float* scales = q.scales.data() + r * groups;
  const float* biases = q.biases.data() + r * groups;
  if (q.bits == 4 && wide) {
    mlx_avx512::dequantize_row4(reinterpret_cast<const uint8_t*>(words), scales, biases, q.cols,
                                q.group_size, dst);
  } else if (q.bits == 4) {
    // The common case, one group at a time: its scale and bias hoisted, 8 values per word.
    const int64_t words_per_group = q.group_size / 8;
    for (int64_t g = 0; g < groups; ++g) {
      const float s = scales[g], b = biases[g];
      const uint32_t* gw = words + g * words_per_group;
      float* d = dst + g * q.group_size;
      for (int64_t wi = 0; wi < words_per_group; ++wi) {
        const uint32_t word = gw[wi];
        for (int k = 0; k < 8; ++k)
          d[wi * 8 + k] = s * static_cast<float>((word >> (4 * k)) & 15u) + b;
      }
    }
  } else if (q.bits == 8 || q.bits == 2) {
    // Values never straddle words: a simple shift loop per word.
    const int per_word = 32 / q.bits;
    const uint32_t mask = (1u << q.bits) - 1;
    for (int64_t wi = 0; wi < wpr; ++wi) {
      uint32_t word = words[wi];
      const int64_t base = wi * per_word;
      for (int k = 0; k < per_word; ++k, word >>= q.bits) {
        const int64_t c = base + k;
        const int64_t g = c / q.group_size;
        dst[c] = scales[g] * static_cast<float>(word & mask) + biases[g];
      }
    }
  } else {
    for (int64_t c = 0; c < q.cols; ++c) {
      const int64_t g = c / q.group_size;
      const uint32_t v = extract_bits(words, wpr, c * q.bits, q.bits);
      dst[c] = scales[g] * static_cast<float>(v) + biases[g];
    }
  }
}

}  // namespace

void dequantize_rows(const QuantizedMatrix& q, int64_t row_begin, int64_t row_end, float* out) {
  if (row_begin < 0 || row_end > q.rows || row_begin > row_end)
    throw std::out_of_range("dequantize_rows: rows out of range");
  // AVX-512 widens 32 values per step where groups (and so rows) are whole steps.
  const bool wide = active_cpu_features().avx512 && q.group_size % 32 == 0 && q.cols % 32 == 0;
  // Rows are independent: split them across threads when there is enough work (this runs on
  // every frozen product of a quantized base, between sgemm calls that use every core).
  parallel_for(row_end - row_begin, (row_end - row_begin) * q.cols >= (int64_t(1) << 16),
               [&](int64_t i) { dequantize_row(q, row_begin + i, wide, out + i * q.cols); });
}

std::vector<float> dequantize(const QuantizedMatrix& q) {
  std::vector<float> out(static_cast<std::size_t>(q.rows * q.cols));
  dequantize_rows(q, 0, q.rows, out.data());
  return out;
}

}  // namespace lora
