// bf16 matrix products for the frozen base, on the CPU's bf16 units (AMX tiles or AVX512-BF16)
// through oneDNN. Activations stay f32 at the interface: they are rounded to bf16 on the way in,
// the products accumulate in f32 and are written as f32. LoRA weights, gradients and optimizer
// state never pass through here.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace lora {

// Whether this CPU has native bf16 matmul (AMX-BF16 or AVX512-BF16), probed once per process.
// Elsewhere the bf16 path would be emulated and slower than f32: callers fall back to sgemm.
bool bf16_matmul_available();
// The instruction set oneDNN dispatches to ("avx512_core_amx", "avx512_core_bf16", ...).
std::string bf16_matmul_isa();

// Which product of a weight W [rows, cols] (row-major) a packed matrix serves.
enum class Bf16Product {
  XWt,  // out[n, rows] = in[n, cols] W^T   (a linear's forward)
  GW,   // out[n, cols] = in[n, rows] W     (its input gradient)
};

// W converted to bf16 and reordered once into the blocked layout the bf16 kernels read, so each
// product pays only for rounding its input. One packed copy serves one product.
class PackedBf16Weight {
 public:
  // w: rows * cols bf16 values (bit patterns), row-major.
  PackedBf16Weight(const uint16_t* w, int64_t rows, int64_t cols, Bf16Product product);
  ~PackedBf16Weight();
  PackedBf16Weight(PackedBf16Weight&&) noexcept;
  PackedBf16Weight& operator=(PackedBf16Weight&&) noexcept;

  // out = in * op(W) + beta * out, f32 in and out (see Bf16Product for the shapes).
  void multiply(const float* in, int64_t n, float* out, float beta = 0.0f) const;
  int64_t rows() const;
  int64_t cols() const;
  Bf16Product product() const;
  std::size_t packed_bytes() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The same product without a packed copy: W is read as it is (bf16, row-major) and oneDNN blocks
// it per call. For weights that are not kept in bf16 (a quantized base dequantized tile by tile).
void matmul_bf16(Bf16Product product, const uint16_t* w, int64_t rows, int64_t cols,
                 const float* in, int64_t n, float* out, float beta = 0.0f);
// matmul_bf16 with the input already rounded: in_bf16 [n, cols] (XWt) or [n, rows] (GW).
void matmul_bf16_rounded(Bf16Product product, const uint16_t* w, int64_t rows, int64_t cols,
                         const uint16_t* in_bf16, int64_t n, float* out, float beta = 0.0f);

// in [rows, cols] (rows ld_in apart) rounded to bf16 (nearest even) into out (rows ld_out apart),
// in parallel.
void round_rows_to_bf16(const float* in, int64_t rows, int64_t cols, int64_t ld_in, uint16_t* out,
                        int64_t ld_out);

}  // namespace lora
