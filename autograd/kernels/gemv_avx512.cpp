// The matrix-vector kernels on 16 float lanes (flags set in autograd/CMakeLists.txt); called only
// when the CPU reports AVX-512 F/BW/VL, FMA and F16C (frozen_gemv.cpp).
// GCC 12 reports its own AVX-512 intrinsics' _mm512_undefined_* placeholders as uninitialized
// once they are inlined here (GCC bug 105593, fixed in GCC 13).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "autograd/kernels/gemv_avx512_int8_blocks.h"
#include "autograd/kernels/kernels_gemv_codebook.h"
#include "autograd/kernels/kernels_gemv_iq4.h"

namespace lora::gemv_avx512 {

const gemv::Kernels& kernels() {
  // The legacy and K int8 block types have 64-byte forms here (their one-row tails use the AVX2
  // operations); the IQ4, MXFP4 and codebook kernels are the 32-byte AVX2 ones.
  static constexpr gemv::Kernels k = with_codebook_int8_blocks<Avx2>(
      with_iq4_blocks<Avx2>(with_wide_int8_blocks<Avx512>(make_kernels<Avx512>())));
  return k;
}

}  // namespace lora::gemv_avx512
