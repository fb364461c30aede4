// The per-instruction-set copies of the ggml row widening (kernels_gguf_dequant.h compiled with
// each set's flags). Call one only when __builtin_cpu_supports says the CPU has it.
#pragma once
#include <cstddef>
#include <cstdint>

#include "autograd/gguf_quant.h"

namespace lora::gguf_avx2 {
void dequantize_row(GgmlType t, const std::byte* src, int64_t n, float* dst);
}
namespace lora::gguf_avx512 {
void dequantize_row(GgmlType t, const std::byte* src, int64_t n, float* dst);
}
