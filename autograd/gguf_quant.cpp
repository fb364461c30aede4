#include "autograd/gguf_quant.h"

#include <cpuid.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "autograd/cpu_features.h"
#include "autograd/dtype.h"
#include "autograd/gguf_iq_grids.h"
#include "autograd/gguf_quantize_k.h"
#include "autograd/kernels/gguf_dequant_isa.h"
#include "autograd/kernels/kernels_gguf_dequant.h"
#include "autograd/parallel.h"

namespace lora {

namespace {

struct TypeTraits {
  GgmlType type;
  std::string_view name;
  int64_t elems;
  int64_t bytes;
  bool writable = true;
};
constexpr std::array<TypeTraits, 25> kTypes{{
    {GgmlType::F32, "F32", 1, 4},
    {GgmlType::F16, "F16", 1, 2},
    {GgmlType::BF16, "BF16", 1, 2},
    {GgmlType::Q4_0, "Q4_0", 32, 18},
    {GgmlType::Q4_1, "Q4_1", 32, 20},
    {GgmlType::Q5_0, "Q5_0", 32, 22},
    {GgmlType::Q5_1, "Q5_1", 32, 24},
    {GgmlType::Q8_0, "Q8_0", 32, 34},
    {GgmlType::Q2_K, "Q2_K", 256, 84},
    {GgmlType::Q3_K, "Q3_K", 256, 110},
    {GgmlType::Q4_K, "Q4_K", 256, 144},
    {GgmlType::Q5_K, "Q5_K", 256, 176},
    {GgmlType::Q6_K, "Q6_K", 256, 210},
    {GgmlType::IQ4_NL, "IQ4_NL", 32, 18},
    {GgmlType::IQ4_XS, "IQ4_XS", 256, 136},
    {GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66, false},
    {GgmlType::IQ2_XS, "IQ2_XS", 256, 74, false},
    {GgmlType::IQ2_S, "IQ2_S", 256, 82, false},
    {GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98, false},
    {GgmlType::IQ3_S, "IQ3_S", 256, 110, false},
    {GgmlType::IQ1_S, "IQ1_S", 256, 50, false},
    {GgmlType::IQ1_M, "IQ1_M", 256, 56, false},
    {GgmlType::TQ1_0, "TQ1_0", 256, 54, false},
    {GgmlType::TQ2_0, "TQ2_0", 256, 66, false},
    {GgmlType::MXFP4, "MXFP4", 32, 17, false},
}};

const TypeTraits& traits(GgmlType t) {
  for (const auto& tr : kTypes)
    if (tr.type == t) return tr;
  throw std::invalid_argument("unknown ggml type " + std::to_string(static_cast<uint32_t>(t)));
}

// ggml's names for the ids we do not read, so a refusal can say what the file holds.
std::string_view other_type_name(uint32_t id) {
  static constexpr std::array<std::string_view, 42> names{
      "F32",   "F16",        "Q4_0",       "Q4_1",       "Q4_2",     "Q4_3",     "Q5_0",
      "Q5_1",  "Q8_0",       "Q8_1",       "Q2_K",       "Q3_K",     "Q4_K",     "Q5_K",
      "Q6_K",  "Q8_K",       "IQ2_XXS",    "IQ2_XS",     "IQ3_XXS",  "IQ1_S",    "IQ4_NL",
      "IQ3_S", "IQ2_S",      "IQ4_XS",     "I8",         "I16",      "I32",      "I64",
      "F64",   "IQ1_M",      "BF16",       "Q4_0_4_4",   "Q4_0_4_8", "Q4_0_8_8", "TQ1_0",
      "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",    "",         ""};
  return id < names.size() ? names[id] : std::string_view{};
}

float f16_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

// The reference: element i of a block computed on its own from the format's definition (which
// byte, which bits, which scale), independent of the block loops the kernels run.
float q_k_reference(GgmlType t, const uint8_t* b, int i) {
  switch (t) {
    case GgmlType::Q2_K: {
      const int half = i / 128, p = i % 128, j = p / 32, r = p % 32;
      const int code = (b[16 + 32 * half + r] >> (2 * j)) & 3;
      const uint8_t sc = b[half * 8 + 2 * j + (r >= 16)];
      return f16_at(b + 80) * static_cast<float>(sc & 15) * static_cast<float>(code) -
             f16_at(b + 82) * static_cast<float>(sc >> 4);
    }
    case GgmlType::Q3_K: {
      const int half = i / 128, p = i % 128, j = p / 32, r = p % 32;
      const int low = (b[32 + 32 * half + r] >> (2 * j)) & 3;
      const bool high = (b[r] >> (4 * half + j)) & 1;
      const uint8_t* s = b + 96;
      const int k = half * 8 + 2 * j + (r >= 16);
      const int scale =
          ((k < 8 ? (s[k] & 15) : (s[k - 8] >> 4)) | ((s[8 + k % 4] >> (2 * (k / 4))) & 3) << 4) -
          32;
      return f16_at(b + 108) * static_cast<float>(scale) * static_cast<float>(low - (high ? 0 : 4));
    }
    case GgmlType::Q4_K:
    case GgmlType::Q5_K: {
      const int c = i / 64, r = i % 64, sub = 2 * c + (r >= 32);
      const uint8_t* s = b + 4;
      const int sc = sub < 4 ? (s[sub] & 63) : ((s[sub + 4] & 15) | ((s[sub - 4] >> 6) << 4));
      const int mn = sub < 4 ? (s[sub + 4] & 63) : ((s[sub + 4] >> 4) | ((s[sub] >> 6) << 4));
      const int qoff = t == GgmlType::Q4_K ? 16 : 48;
      const uint8_t byte = b[qoff + 32 * c + r % 32];
      int code = r < 32 ? (byte & 15) : (byte >> 4);
      if (t == GgmlType::Q5_K) code |= ((b[16 + r % 32] >> sub) & 1) << 4;
      return f16_at(b) * static_cast<float>(sc) * static_cast<float>(code) -
             f16_at(b + 2) * static_cast<float>(mn);
    }
    case GgmlType::Q6_K: {
      const int half = i / 128, p = i % 128, quarter = p / 32, l = p % 32;
      const uint8_t lowbyte = b[64 * half + l + (quarter & 1) * 32];
      const int low = quarter < 2 ? (lowbyte & 15) : (lowbyte >> 4);
      const int high = (b[128 + 32 * half + l] >> (2 * quarter)) & 3;
      const auto sc = static_cast<int8_t>(b[192 + 8 * half + l / 16 + 2 * quarter]);
      return f16_at(b + 208) * static_cast<float>(sc) * static_cast<float>((low | high << 4) - 32);
    }
    case GgmlType::IQ4_XS: {  // d, scales_h (2 bytes), scales_l (4), then 8 x 16 code bytes
      const int sub = i / 32, r = i % 32;
      uint16_t high_bits;
      std::memcpy(&high_bits, b + 2, 2);
      const int scale =
          (((b[4 + sub / 2] >> (4 * (sub % 2))) & 15) | ((high_bits >> (2 * sub)) & 3) << 4) - 32;
      const uint8_t byte = b[8 + 16 * sub + r % 16];
      const int code = r < 16 ? (byte & 15) : (byte >> 4);
      return f16_at(b) * static_cast<float>(scale) * static_cast<float>(kIq4Values[code]);
    }
    default:
      throw std::logic_error("q_k_reference: not a K-quant");
  }
}

uint16_t u16_at(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The signed magnitude `value` times `scale`, negated where bit k of `signs` is set; the products
// in the order the format's own decoder forms them, so that the floats are the same.
float signed_times(float scale, int value, uint8_t signs, int k) {
  return scale * static_cast<float>(value) * ((signs >> k) & 1 ? -1.0f : 1.0f);
}

// Element i of a codebook, ternary or MXFP4 block, on its own (layouts in gguf_iq_grids.h and
// kernels_gguf_dequant.h). For the codebook types, element i is value j = i % 8 of entry
// l = i % 32 / 8 of group g = i / 32.
float iq_reference(GgmlType t, const uint8_t* b, int i) {
  using namespace iq_grids;
  const int g = i / 32, l = i % 32 / 8, j = i % 8;
  switch (t) {
    case GgmlType::IQ2_XXS: {  // d, then per group 4 entry bytes and a word of 4 x 7 signs, scale
      const uint32_t word = u32_at(b + 2 + 8 * g + 4);
      const float db = f16_at(b) * (0.5f + static_cast<float>(word >> 28)) * 0.25f;
      return signed_times(db, grid_value(kIq2Xxs[b[2 + 8 * g + l]], j),
                          signs_of_seven(word >> (7 * l)), j);
    }
    case GgmlType::IQ2_XS: {  // d, 32 words (9-bit entry, 7 signs), 8 bytes of two 4-bit scales
      const uint16_t q = u16_at(b + 2 + 2 * (4 * g + l));
      const int scale = (b[66 + g] >> (4 * (l / 2))) & 15;
      const float db = f16_at(b) * (0.5f + static_cast<float>(scale)) * 0.25f;
      return signed_times(db, grid_value(kIq2Xs[q & 511], j), signs_of_seven(q >> 9), j);
    }
    case GgmlType::IQ2_S: {  // d, 32 entry bytes, 32 sign bytes, 8 high-bit bytes, 8 scales
      const int entry = b[2 + 4 * g + l] | ((b[66 + g] << (8 - 2 * l)) & 0x300);
      const int scale = (b[74 + g] >> (4 * (l / 2))) & 15;
      const float db = f16_at(b) * (0.5f + static_cast<float>(scale)) * 0.25f;
      return signed_times(db, grid_value(kIq2S[entry], j), b[34 + 4 * g + l], j);
    }
    case GgmlType::IQ3_XXS: {  // d, 64 entry bytes (4 values each), per group a word as IQ2_XXS
      const uint32_t word = u32_at(b + 66 + 4 * g);
      const float db = f16_at(b) * (0.5f + static_cast<float>(word >> 28)) * 0.5f;
      const uint32_t entry = kIq3Xxs[b[2 + 8 * g + 2 * l + j / 4]];
      return signed_times(db, grid_value(entry, j % 4), signs_of_seven(word >> (7 * l)), j);
    }
    case GgmlType::IQ3_S: {  // d, 64 entry bytes, 8 high-bit bytes, 32 sign bytes, 4 scales
      const int high = (b[66 + g] >> (2 * l + j / 4)) & 1;
      const uint32_t entry = kIq3S[b[2 + 8 * g + 2 * l + j / 4] | high << 8];
      const int scale = (b[106 + g / 2] >> (4 * (g % 2))) & 15;
      const float db = f16_at(b) * static_cast<float>(1 + 2 * scale);
      return signed_times(db, grid_value(entry, j % 4), b[74 + 4 * g + l], j);
    }
    case GgmlType::IQ1_S: {  // d, 32 entry bytes, per group a word: 4 x 3 high bits, scale, sign
      const uint16_t word = u16_at(b + 34 + 2 * g);
      const float dl = f16_at(b) * static_cast<float>(2 * ((word >> 12) & 7) + 1);
      const float delta = word & 0x8000 ? -0.125f : 0.125f;
      const int entry = b[2 + 4 * g + l] | ((word >> (3 * l)) & 7) << 8;
      return dl * (static_cast<float>(iq1_grid_value(kIq1S[entry], j)) + delta);
    }
    case GgmlType::IQ1_M: {  // 32 entry bytes, 16 high-bit bytes, 4 words of 3-bit scales + d
      uint16_t sc[4];
      std::memcpy(sc, b + 48, 8);
      const auto d_bits = static_cast<uint16_t>((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) |
                                                ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
      const int scale = (sc[g / 2] >> (6 * (g % 2) + 3 * (l / 2))) & 7;
      const float dl = f16_to_f32(d_bits) * static_cast<float>(2 * scale + 1);
      const uint8_t high = b[32 + 2 * g + l / 2] >> (4 * (l % 2));
      const float delta = high & 8 ? -0.125f : 0.125f;
      const int entry = b[4 * g + l] | (high & 7) << 8;
      return dl * (static_cast<float>(iq1_grid_value(kIq1S[entry], j)) + delta);
    }
    case GgmlType::TQ1_0: {  // 48 bytes of 5 trits, 4 bytes of 4 trits, d
      // Trit n of a byte q is the top of 3 * (q * 3^n mod 256) / 256, in 0..2.
      static constexpr uint8_t kPow3[5] = {1, 3, 9, 27, 81};
      int byte = 0, n = 0;
      if (i < 160) {
        byte = i % 32, n = i / 32;
      } else if (i < 240) {
        byte = 32 + (i - 160) % 16, n = (i - 160) / 16;
      } else {
        byte = 48 + (i - 240) % 4, n = (i - 240) / 4;
      }
      const auto q = static_cast<uint8_t>(b[byte] * kPow3[n]);
      return static_cast<float>(((q * 3) >> 8) - 1) * f16_at(b + 52);
    }
    case GgmlType::TQ2_0: {  // 64 bytes of 4 two-bit codes (element 128h + 32n + m: byte
                             // 32h + m, bits 2n), d
      const int h = i / 128, n = i % 128 / 32, m = i % 32;
      return static_cast<float>(((b[32 * h + m] >> (2 * n)) & 3) - 1) * f16_at(b + 64);
    }
    case GgmlType::MXFP4: {  // E8M0 scale, then Q4_0's nibble order over the doubled E2M1 levels
      const int code = i < 16 ? (b[1 + i] & 15) : (b[1 + i - 16] >> 4);
      return static_cast<float>(kMxfp4Levels[code]) * e8m0_half(b[0]);
    }
    default:
      throw std::logic_error("iq_reference: not a codebook, ternary or MXFP4 type");
  }
}

float q32_reference(GgmlType t, const uint8_t* b, int i) {
  const int j = i % 16;
  const bool upper = i >= 16;
  switch (t) {
    case GgmlType::Q8_0:
      return f16_at(b) * static_cast<float>(static_cast<int8_t>(b[2 + i]));
    case GgmlType::IQ4_NL:
      return f16_at(b) * static_cast<float>(kIq4Values[upper ? (b[2 + j] >> 4) : (b[2 + j] & 15)]);
    case GgmlType::Q4_0:
    case GgmlType::Q4_1: {
      const uint8_t* qs = b + (t == GgmlType::Q4_0 ? 2 : 4);
      const int code = upper ? (qs[j] >> 4) : (qs[j] & 15);
      if (t == GgmlType::Q4_0) return f16_at(b) * static_cast<float>(code - 8);
      return f16_at(b) * static_cast<float>(code) + f16_at(b + 2);
    }
    case GgmlType::Q5_0:
    case GgmlType::Q5_1: {
      const bool zero = t == GgmlType::Q5_0;
      const uint8_t* qh = b + (zero ? 2 : 4);
      const uint8_t* qs = b + (zero ? 6 : 8);
      const int high = (qh[i / 8] >> (i % 8)) & 1;
      const int code = (upper ? (qs[j] >> 4) : (qs[j] & 15)) | high << 4;
      if (zero) return f16_at(b) * static_cast<float>(code - 16);
      return f16_at(b) * static_cast<float>(code) + f16_at(b + 2);
    }
    default:
      throw std::logic_error("q32_reference: not a 32-element block type");
  }
}

enum class Isa { Scalar, Avx2, Avx512 };
// The baseline build already assumes AVX2, FMA and F16C; AVX-512 as active_cpu_features() allows.
Isa detect_isa() {
  const CpuFeatures& f = active_cpu_features();
  if (f.avx512) return Isa::Avx512;
  return f.avx2 ? Isa::Avx2 : Isa::Scalar;
}
Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

void check_whole_blocks(GgmlType t, int64_t cols) {
  if (cols < 0 || cols % traits(t).elems != 0)
    throw std::invalid_argument("a row of " + std::to_string(cols) + " " +
                                std::string(traits(t).name) + " elements is not whole blocks of " +
                                std::to_string(traits(t).elems));
}

// llama.cpp's reference rounding for the 32-element types: the scale maps the extreme value onto
// the end of the code range, codes round to nearest.
void quantize_block32(GgmlType t, const float* x, uint8_t* b) {
  float amax = 0.0f, max = 0.0f, lo = x[0], hi = x[0];
  for (int j = 0; j < 32; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  auto put_f16 = [](uint8_t* p, float v) {
    const uint16_t h = f32_to_f16(v);
    std::memcpy(p, &h, 2);
  };
  switch (t) {
    case GgmlType::Q8_0: {
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      put_f16(b, d);
      for (int j = 0; j < 32; ++j)
        b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * id)));
      return;
    }
    case GgmlType::Q4_0:
    case GgmlType::Q5_0: {
      const bool four = t == GgmlType::Q4_0;
      const float half_range = four ? 8.0f : 16.0f;
      const float d = max / -half_range, id = d != 0.0f ? 1.0f / d : 0.0f;
      const int top = four ? 15 : 31;
      put_f16(b, d);
      uint8_t* qs = b + (four ? 2 : 6);
      uint32_t qh = 0;
      for (int j = 0; j < 16; ++j) {
        const int c0 = std::min(top, static_cast<int>(x[j] * id + half_range + 0.5f));
        const int c1 = std::min(top, static_cast<int>(x[j + 16] * id + half_range + 0.5f));
        qs[j] = static_cast<uint8_t>((c0 & 15) | (c1 & 15) << 4);
        qh |= static_cast<uint32_t>((c0 >> 4) & 1) << j | static_cast<uint32_t>((c1 >> 4) & 1)
                                                              << (j + 16);
      }
      if (!four) std::memcpy(b + 2, &qh, 4);
      return;
    }
    case GgmlType::Q4_1:
    case GgmlType::Q5_1: {
      const bool four = t == GgmlType::Q4_1;
      const int top = four ? 15 : 31;
      const float d = (hi - lo) / static_cast<float>(top), id = d != 0.0f ? 1.0f / d : 0.0f;
      put_f16(b, d);
      put_f16(b + 2, lo);
      uint8_t* qs = b + (four ? 4 : 8);
      uint32_t qh = 0;
      for (int j = 0; j < 16; ++j) {
        const int c0 = std::min(top, static_cast<int>((x[j] - lo) * id + 0.5f));
        const int c1 = std::min(top, static_cast<int>((x[j + 16] - lo) * id + 0.5f));
        qs[j] = static_cast<uint8_t>((c0 & 15) | (c1 & 15) << 4);
        qh |= static_cast<uint32_t>((c0 >> 4) & 1) << j | static_cast<uint32_t>((c1 >> 4) & 1)
                                                              << (j + 16);
      }
      if (!four) std::memcpy(b + 4, &qh, 4);
      return;
    }
    default:
      throw std::invalid_argument("quantizing to " + std::string(ggml_type_name(t)) +
                                  " is not supported");
  }
}

}  // namespace

std::optional<GgmlType> ggml_type_from_id(uint32_t id) {
  for (const auto& tr : kTypes)
    if (static_cast<uint32_t>(tr.type) == id) return tr.type;
  return std::nullopt;
}

std::string_view ggml_type_name(GgmlType t) { return traits(t).name; }

std::string ggml_type_id_name(uint32_t id) {
  const auto name = other_type_name(id);
  return name.empty() ? "type " + std::to_string(id) : std::string(name);
}

std::optional<GgmlType> ggml_type_named(std::string_view name) {
  std::string upper(name);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const auto& tr : kTypes)
    if (tr.name == upper) return tr.type;
  return std::nullopt;
}

bool ggml_type_writable(GgmlType t) { return traits(t).writable; }

int64_t ggml_block_elems(GgmlType t) { return traits(t).elems; }
int64_t ggml_block_bytes(GgmlType t) { return traits(t).bytes; }

uint64_t ggml_row_bytes(GgmlType t, int64_t cols) {
  check_whole_blocks(t, cols);
  return static_cast<uint64_t>(cols / traits(t).elems) * static_cast<uint64_t>(traits(t).bytes);
}

std::string_view ggml_kernel_isa() {
  switch (cpu_isa()) {
    case Isa::Avx512:
      return "avx512";
    case Isa::Avx2:
      return "avx2";
    case Isa::Scalar:
      break;
  }
  return "scalar";
}

void ggml_dequantize_row(GgmlType t, const std::byte* src, int64_t cols, float* dst) {
  check_whole_blocks(t, cols);
  switch (cpu_isa()) {
    case Isa::Avx512:
      return gguf_avx512::dequantize_row(t, src, cols, dst);
    case Isa::Avx2:
      return gguf_avx2::dequantize_row(t, src, cols, dst);
    case Isa::Scalar:
      return dequantize_row_blocks(t, reinterpret_cast<const uint8_t*>(src), cols, dst);
  }
}

void ggml_dequantize_row_reference(GgmlType t, const std::byte* src, int64_t cols, float* dst) {
  check_whole_blocks(t, cols);
  const auto* p = reinterpret_cast<const uint8_t*>(src);
  const TypeTraits& tr = traits(t);
  for (int64_t i = 0; i < cols; ++i) {
    const uint8_t* block = p + (i / tr.elems) * tr.bytes;
    const int k = static_cast<int>(i % tr.elems);
    switch (t) {
      case GgmlType::F32:
        std::memcpy(dst + i, block, 4);
        break;
      case GgmlType::F16:
        dst[i] = f16_at(block);
        break;
      case GgmlType::BF16: {
        uint16_t h;
        std::memcpy(&h, block, 2);
        dst[i] = bf16_to_f32(h);
        break;
      }
      default:
        dst[i] = !tr.writable     ? iq_reference(t, block, k)
                 : tr.elems == 32 ? q32_reference(t, block, k)
                                  : q_k_reference(t, block, k);
    }
  }
}

void ggml_quantize_row(GgmlType t, const float* src, int64_t cols, std::byte* dst) {
  check_whole_blocks(t, cols);
  if (!traits(t).writable)
    throw std::invalid_argument(std::string(traits(t).name) +
                                " is read but not written: choose another type to write");
  auto* out = reinterpret_cast<uint8_t*>(dst);
  switch (t) {
    case GgmlType::F32:
      return convert_from_f32(DType::F32, src, static_cast<std::size_t>(cols), out);
    case GgmlType::F16:
      return convert_from_f32(DType::F16, src, static_cast<std::size_t>(cols), out);
    case GgmlType::BF16:
      return convert_from_f32(DType::BF16, src, static_cast<std::size_t>(cols), out);
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K: {
      auto* encode = t == GgmlType::Q2_K   ? quantize_q2_k_block
                     : t == GgmlType::Q3_K ? quantize_q3_k_block
                     : t == GgmlType::Q4_K ? quantize_q4_k_block
                     : t == GgmlType::Q5_K ? quantize_q5_k_block
                                           : quantize_q6_k_block;
      for (int64_t b = 0; b < cols / 256; ++b) encode(src + 256 * b, out + traits(t).bytes * b);
      return;
    }
    case GgmlType::IQ4_NL:
      for (int64_t b = 0; b < cols / 32; ++b) quantize_iq4_nl_block(src + 32 * b, out + 18 * b);
      return;
    case GgmlType::IQ4_XS:
      for (int64_t b = 0; b < cols / 256; ++b) quantize_iq4_xs_block(src + 256 * b, out + 136 * b);
      return;
    default:
      for (int64_t b = 0; b < cols / 32; ++b)
        quantize_block32(t, src + 32 * b, out + traits(t).bytes * b);
  }
}

std::vector<std::byte> ggml_quantize_rows(GgmlType t, std::span<const float> w, int64_t rows,
                                          int64_t cols) {
  if (rows < 0 || w.size() != static_cast<std::size_t>(rows * cols))
    throw std::invalid_argument("ggml_quantize_rows: " + std::to_string(w.size()) +
                                " values are not " + std::to_string(rows) + " rows of " +
                                std::to_string(cols));
  const uint64_t rb = ggml_row_bytes(t, cols);
  std::vector<std::byte> bytes(rb * static_cast<uint64_t>(rows));
  parallel_for(rows, rows * cols >= (int64_t(1) << 16), [&](int64_t r) {
    ggml_quantize_row(t, w.data() + r * cols, cols, bytes.data() + static_cast<uint64_t>(r) * rb);
  });
  return bytes;
}

namespace {

// Q4_0Octets' pieces: 64 columns of 8 rows.
constexpr int64_t kOctetRows = 8, kOctetPieceBytes = 8 * 2 * 18;

// Where byte `at` of row r's block j (0 or 1) of a 64-column piece lies in the piece: the scale's
// two bytes, then the code bytes in chunks of 4.
int64_t octet_offset(int64_t r, int64_t j, int64_t at) {
  if (at < 2) return 16 * j + 2 * r + at;
  const int64_t code = at - 2;
  return 32 + 128 * j + 32 * (code / 4) + 4 * r + code % 4;
}

// Moves one group's 8 rows between the layouts: byte `at` of block b of row r is at
// r * row_bytes + 18 * b + at in Rows and at 288 * (b / 2) + octet_offset(...) in octets.
template <bool kToOctets>
void move_octet_group(const std::byte* from, int64_t cols, std::byte* to) {
  const int64_t rb = cols / 32 * 18;
  for (int64_t r = 0; r < kOctetRows; ++r)
    for (int64_t b = 0; b < cols / 32; ++b)
      for (int64_t at = 0; at < 18; at += 2) {
        const int64_t plain = r * rb + 18 * b + at;
        const int64_t octet = kOctetPieceBytes * (b / 2) + octet_offset(r, b % 2, at);
        std::memcpy(to + (kToOctets ? octet : plain), from + (kToOctets ? plain : octet), 2);
      }
}

}  // namespace

bool q4_0_octets_fit(GgmlType type, int64_t rows, int64_t cols) {
  return type == GgmlType::Q4_0 && rows > 0 && rows % kOctetRows == 0 && cols > 0 && cols % 64 == 0;
}

void q4_0_to_octets(std::span<std::byte> bytes, int64_t rows, int64_t cols) {
  if (!q4_0_octets_fit(GgmlType::Q4_0, rows, cols) ||
      bytes.size() != ggml_row_bytes(GgmlType::Q4_0, cols) * static_cast<uint64_t>(rows))
    throw std::invalid_argument("q4_0_to_octets: not a [" + std::to_string(rows) + ", " +
                                std::to_string(cols) +
                                "] Q4_0 matrix of whole octets of rows and 64-column pieces");
  const auto group_bytes = static_cast<std::size_t>(kOctetRows * cols / 32 * 18);
  parallel_for_with_scratch(
      rows / kOctetRows, rows * cols >= (int64_t(1) << 16),
      [&] { return std::vector<std::byte>(group_bytes); },
      [&](std::vector<std::byte>& plain, int64_t g) {
        std::byte* group = bytes.data() + static_cast<std::size_t>(g) * group_bytes;
        std::memcpy(plain.data(), group, group_bytes);
        move_octet_group<true>(plain.data(), cols, group);
      });
}

void q4_0_octets_to_rows(const std::byte* group, int64_t cols, std::byte* rows_out) {
  move_octet_group<false>(group, cols, rows_out);
}

void GgmlMatrix::rows_f32(int64_t begin, int64_t end, float* out) const {
  if (begin < 0 || end > rows || begin > end)
    throw std::out_of_range("GgmlMatrix::rows_f32: rows [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") of " + std::to_string(rows));
  const uint64_t rb = row_bytes();
  const std::byte* base = data.get();
  const bool parallel = (end - begin) * cols >= (int64_t(1) << 16);
  if (layout == GgmlLayout::Rows) {
    parallel_for(end - begin, parallel, [&](int64_t i) {
      ggml_dequantize_row(type, base + static_cast<uint64_t>(begin + i) * rb, cols, out + i * cols);
    });
    return;
  }
  // Octets: each group that holds wanted rows goes back to Rows layout, then widens as above.
  const int64_t first = begin / kOctetRows, last = (end + kOctetRows - 1) / kOctetRows;
  parallel_for_with_scratch(
      last - first, parallel, [&] { return std::vector<std::byte>(kOctetRows * rb); },
      [&](std::vector<std::byte>& plain, int64_t i) {
        const int64_t g = first + i;
        q4_0_octets_to_rows(base + static_cast<uint64_t>(g * kOctetRows) * rb, cols, plain.data());
        for (int64_t r = std::max(begin, g * kOctetRows); r < std::min(end, (g + 1) * kOctetRows);
             ++r)
          ggml_dequantize_row(type, plain.data() + static_cast<uint64_t>(r % kOctetRows) * rb, cols,
                              out + (r - begin) * cols);
      });
}

GgmlMatrix GgmlMatrix::owning(int64_t rows, int64_t cols, GgmlType type,
                              std::span<const std::byte> bytes) {
  GgmlMatrix m{rows, cols, type, nullptr};
  if (rows < 0 || bytes.size() != m.total_bytes())
    throw std::invalid_argument("GgmlMatrix: " + std::to_string(bytes.size()) + " bytes for a [" +
                                std::to_string(rows) + ", " + std::to_string(cols) + "] " +
                                std::string(ggml_type_name(type)) + " matrix");
  auto copy = std::make_shared<std::byte[]>(std::max<std::size_t>(bytes.size(), 1));
  std::copy(bytes.begin(), bytes.end(), copy.get());
  m.data = std::shared_ptr<const std::byte>(copy, copy.get());
  return m;
}

}  // namespace lora
