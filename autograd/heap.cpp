#include "autograd/heap.h"

#include <malloc.h>

#include <climits>

namespace lora {

void keep_freed_memory_for_reuse() {
  // No mmap()ed chunks: glibc caps M_MMAP_THRESHOLD at 32 MiB, below one Qwen2.5-0.5B MLP
  // activation (2048 x 4864 floats), so the threshold alone is not enough.
  mallopt(M_MMAP_MAX, 0);
  // Never shrink the heap top on free (the next step grows it back at once).
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

}  // namespace lora
