// gemv_avx512.cpp's kernels compiled with AVX512-VNNI as well (autograd/CMakeLists.txt), for CPUs
// that have it (frozen_gemv.cpp): the int8 kernels' byte dots become one instruction each
// (gemv_avx512_ops.h, gemv_avx2_ops.h); every other kernel is the same code.
// The kernels' headers pick their VNNI forms by this name, which only this file defines: the
// compiler's own feature macro would also be set by a build for a VNNI machine (-march=native).
#define LORA_GEMV_VNNI 1
#pragma GCC diagnostic ignored "-Wuninitialized"  // as in gemv_avx512.cpp: GCC bug 105593
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include "autograd/kernels/gemv_avx512_int8_blocks.h"
#include "autograd/kernels/kernels_gemv_codebook.h"
#include "autograd/kernels/kernels_gemv_iq4.h"

namespace lora::gemv_avx512_vnni {

const gemv::Kernels& kernels() {
  static constexpr gemv::Kernels k = with_codebook_int8_blocks<Avx2>(
      with_iq4_blocks<Avx2>(with_wide_int8_blocks<Avx512>(make_kernels<Avx512>())));
  return k;
}

}  // namespace lora::gemv_avx512_vnni
