// The LoRA rank-r loops on 16 float lanes, compiled with the AVX-512 (F, BW, VL, DQ) flags
// (autograd/CMakeLists.txt) and called only when active_cpu_features() allows them
// (kernels/lora_kernels.cpp).
#include "autograd/kernels/lora_loops.h"

namespace lora::kernels::avx512 {

const LoraLoops& lora_loops() {
  static constexpr LoraLoops loops = make_lora_loops<16>();
  return loops;
}

}  // namespace lora::kernels::avx512
