#include "autograd/heap.h"

#include <malloc.h>

namespace lora {

void keep_freed_memory_for_reuse() {
  // No mmap()ed chunks: glibc caps M_MMAP_THRESHOLD at 32 MiB, below one Qwen2.5-0.5B MLP
  // activation (2048 x 4864 floats), so the threshold alone is not enough.
  mallopt(M_MMAP_MAX, 0);
  // Never shrink the heap top on free (the next step grows it back at once). -1 disables trimming;
  // any finite value (an int) would still trim after a step whose activations pass 2 GiB.
  mallopt(M_TRIM_THRESHOLD, -1);
}

}  // namespace lora
