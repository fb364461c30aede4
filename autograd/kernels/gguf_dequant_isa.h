// The per-instruction-set copies of the ggml row widening (kernels_gguf_dequant.h compiled with
// each set's flags). Call one only when active_cpu_features() (autograd/cpu_features.h) allows it.
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
