// f32 -> bf16 rounding with the AVX512-BF16 conversion (flags in autograd/CMakeLists.txt), for the
// activations entering a bf16 product; called only when active_cpu_features() has AVX512-BF16.
#include <immintrin.h>

#include "autograd/kernels/kernel_variants.h"

namespace lora::kernels::avx512bf16 {

void round_to_bf16(const float* in, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (n - i)) - 1u);
    const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, in + i));
    _mm256_mask_storeu_epi16(out + i, m, reinterpret_cast<const __m256i&>(v));
  }
}

}  // namespace lora::kernels::avx512bf16
