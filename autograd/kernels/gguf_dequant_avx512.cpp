// The ggml block loops compiled for AVX512 (flags set in autograd/CMakeLists.txt); called only
// when the CPU reports it (gguf_quant.cpp).
#include "autograd/kernels/gguf_dequant_isa.h"
#include "autograd/kernels/kernels_gguf_dequant.h"

namespace lora::gguf_avx512 {

void dequantize_row(GgmlType t, const std::byte* src, int64_t n, float* dst) {
  dequantize_row_blocks(t, reinterpret_cast<const uint8_t*>(src), n, dst);
}

}  // namespace lora::gguf_avx512
