// ggml's tensor types as GGUF files store them: plain floats (F32, F16, BF16), the 32-element
// blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0: an f16 scale, sometimes an f16 minimum, packed codes)
// and the 256-element K-quant super-blocks (Q2_K..Q6_K: an f16 super-scale over 16 or 8
// sub-blocks whose own scales are quantized), and the non-linear 4-bit types (IQ4_NL: 32
// elements, an f16 scale; IQ4_XS: 256 elements, an f16 scale over eight 6-bit sub-block scales),
// whose codes index kIq4Values instead of counting steps. The types below IQ4, which pick whole
// groups of 4 or 8 values from a codebook (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S;
// gguf_iq_grids.h), the ternary ones (TQ1_0, TQ2_0) and MXFP4 (32 four-bit floats under a power
// of two) are read but not written: llama-quantize needs an importance matrix for most of them,
// and no encoder for them is built here. A row of a matrix is a whole number of blocks.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lora {

enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  IQ2_XXS = 16,
  IQ2_XS = 17,
  IQ3_XXS = 18,
  IQ1_S = 19,
  IQ4_NL = 20,
  IQ3_S = 21,
  IQ2_S = 22,
  IQ4_XS = 23,
  IQ1_M = 29,
  BF16 = 30,
  TQ1_0 = 34,
  TQ2_0 = 35,
  MXFP4 = 39,
};

// The 16 levels an IQ4_NL or IQ4_XS code stands for, in units of the block's scale: closer
// together near zero, where most weights lie.
inline constexpr int8_t kIq4Values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                          1,    13,   25,  38,  53,  69,  89,  113};

// MXFP4's 16 levels: the E2M1 values doubled (so its scale is halved, e8m0_half).
inline constexpr int8_t kMxfp4Levels[16] = {0, 1,  2,  3,  4,  6,  8,  12,
                                            0, -1, -2, -3, -4, -6, -8, -12};

// An MXFP4 block's E8M0 scale byte e as 2^(e - 128): 2^(e - 127) halved for the doubled levels;
// the two smallest are subnormals. (e = 255, NaN in the MX format, reads as 2^127, as llama.cpp's.)
inline float e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? uint32_t(0x00200000) << e : uint32_t(e - 1) << 23;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

// The types we read; nullopt for any other id (Q8_1, Q8_K, the repacked Q4_0_4_4, NVFP4, ...).
std::optional<GgmlType> ggml_type_from_id(uint32_t id);
std::string_view ggml_type_name(GgmlType t);  // "Q4_K"
// The name of any ggml type id, for error messages ("IQ2_XXS", "type 99").
std::string ggml_type_id_name(uint32_t id);
// "q4_k", "Q8_0", "f16", "bf16", ... (any case) -> the type; nullopt otherwise.
std::optional<GgmlType> ggml_type_named(std::string_view name);

// Whether ggml_quantize_row writes `t` (every type but the read-only ones named above).
bool ggml_type_writable(GgmlType t);

int64_t ggml_block_elems(GgmlType t);  // 1 for floats, 32 or 256
int64_t ggml_block_bytes(GgmlType t);
// Bytes of a row of `cols` elements; cols must be a multiple of the block size.
uint64_t ggml_row_bytes(GgmlType t, int64_t cols);

// Widens `cols` elements (whole blocks) starting at `src` to f32.
void ggml_dequantize_row(GgmlType t, const std::byte* src, int64_t cols, float* dst);
// The scalar reference the run-time-dispatched kernels are tested against.
void ggml_dequantize_row_reference(GgmlType t, const std::byte* src, int64_t cols, float* dst);
// Which dequantization kernel this CPU runs: "avx512", "avx2" or "scalar".
std::string_view ggml_kernel_isa();

// Quantizes a row of f32 (whole blocks) to `t`: llama.cpp's reference rounding for the 32-element
// types (the extreme value on the end of the code range, codes to nearest), its reference search
// for Q2_K, Q3_K, Q4_K, Q5_K and Q6_K (gguf_quantize_k.h), and llama-quantize's scale search for
// IQ4_NL and IQ4_XS (gguf_quantize_k.h too); floats are converted. Throws std::invalid_argument
// for a type that is not ggml_type_writable.
void ggml_quantize_row(GgmlType t, const float* src, int64_t cols, std::byte* dst);
// A [rows, cols] matrix quantized row by row as ggml_quantize_row does, the rows split over the
// threads (the searches of the K and IQ4 types take minutes on one thread for a 1B model); the
// bytes do not depend on the thread count.
std::vector<std::byte> ggml_quantize_rows(GgmlType t, std::span<const float> w, int64_t rows,
                                          int64_t cols);

// How a matrix's blocks lie. Rows: as GGUF stores them, row after row. Q4_0Octets (Q4_0 only,
// rows a multiple of 8 and columns of 64; what the int8 decode kernel reads fastest): each 8 rows
// take the same bytes as before, now in pieces of 288 bytes for 64 columns (two blocks b, b + 1):
// the 8 rows' f16 scales of block b, those of block b + 1, then per block its 16 code bytes in
// four chunks of 4, chunk c of all 8 rows side by side (row r at byte 4r of the 32). A byte dot
// of such 32 bytes with 4 bytes of x repeated gives row r's sum in lane r: eight rows advance
// together with no horizontal sum, where a row's own 18-byte blocks straddle vector loads.
enum class GgmlLayout { Rows, Q4_0Octets };

// Whether a [rows, cols] matrix of `type` can take the Q4_0Octets layout.
bool q4_0_octets_fit(GgmlType type, int64_t rows, int64_t cols);
// Rewrites `bytes`, a [rows, cols] Q4_0 matrix in Rows layout, into Q4_0Octets in place
// (q4_0_octets_fit must hold).
void q4_0_to_octets(std::span<std::byte> bytes, int64_t rows, int64_t cols);
// One octet group of `cols` columns (8 * row_bytes bytes at `group`) back in Rows layout.
void q4_0_octets_to_rows(const std::byte* group, int64_t cols, std::byte* rows_out);

// A [rows, cols] matrix in one ggml type, its bytes owned elsewhere (a memory-mapped GGUF file)
// or in `owned`. `data` stays valid as long as this value lives.
struct GgmlMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  GgmlType type = GgmlType::F32;
  std::shared_ptr<const std::byte> data;
  GgmlLayout layout = GgmlLayout::Rows;

  uint64_t row_bytes() const { return ggml_row_bytes(type, cols); }
  uint64_t total_bytes() const { return row_bytes() * static_cast<uint64_t>(rows); }
  // Rows [begin, end) as f32, [end - begin, cols].
  void rows_f32(int64_t begin, int64_t end, float* out) const;
  // A matrix that owns a copy of `bytes`.
  static GgmlMatrix owning(int64_t rows, int64_t cols, GgmlType type,
                           std::span<const std::byte> bytes);
};

}  // namespace lora
