// The matrix-vector kernels on 8 float lanes (flags set in autograd/CMakeLists.txt); called only
// when the CPU reports AVX2, FMA and F16C (frozen_gemv.cpp).
#include "autograd/kernels/gemv_avx2_ops.h"
#include "autograd/kernels/kernels_gemv.h"
#include "autograd/kernels/kernels_gemv_codebook.h"
#include "autograd/kernels/kernels_gemv_int8_blocks.h"
#include "autograd/kernels/kernels_gemv_iq4.h"

namespace lora::gemv_avx2 {

const gemv::Kernels& kernels() {
  static constexpr gemv::Kernels k = with_codebook_int8_blocks<Avx2>(
      with_iq4_blocks<Avx2>(with_int8_blocks<Avx2>(make_kernels<Avx2>())));
  return k;
}

}  // namespace lora::gemv_avx2
