// The LoRA rank-r loops on 8 float lanes, compiled with the AVX2+FMA flags
// (autograd/CMakeLists.txt) and called only when active_cpu_features() allows them
// (kernels/lora_kernels.cpp).
#include "autograd/kernels/lora_loops.h"

namespace lora::kernels::avx2 {

const LoraLoops& lora_loops() {
  static constexpr LoraLoops loops = make_lora_loops<8>();
  return loops;
}

}  // namespace lora::kernels::avx2
