// MLX 4-bit rows widened to f32 on AVX-512 (flags set in autograd/CMakeLists.txt); called only
// when the CPU reports AVX-512 (quant.cpp). The baseline's loop widens one 32-bit word (8 values)
// per step; this takes 16 bytes (32 values) per step.
// GCC 12 reports its own AVX-512 intrinsics' _mm512_undefined_* placeholders as uninitialized
// once they are inlined here (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "autograd/kernels/mlx_dequant_isa.h"

namespace lora::mlx_avx512 {

void dequantize_row4(const uint8_t* codes, const float* scales, const float* biases, int64_t cols,
                     int64_t group_size, float* out) {
  // Lanes of the low nibbles (even elements) and of the high ones (odd elements), interleaved.
  const __m512i first = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i second =
      _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  const __m512i low_bits = _mm512_set1_epi32(15);
  for (int64_t c = 0; c < cols; c += 32) {
    const int64_t g = c / group_size;
    const __m512 s = _mm512_set1_ps(scales[g]), b = _mm512_set1_ps(biases[g]);
    const __m512i bytes =
        _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + c / 2)));
    const __m512 even =
        _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(bytes, low_bits)), s, b);
    const __m512 odd = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(bytes, 4)), s, b);
    _mm512_storeu_ps(out + c, _mm512_permutex2var_ps(even, first, odd));
    _mm512_storeu_ps(out + c + 16, _mm512_permutex2var_ps(even, second, odd));
  }
}

}  // namespace lora::mlx_avx512
