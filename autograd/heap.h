// How the process heap treats the large, short-lived activation buffers of a training step.
#pragma once

namespace lora {

// A training step allocates and frees the same set of multi-megabyte activation and gradient
// buffers every step. glibc serves such sizes with fresh mmap()s and unmaps them on free, so every
// step page-faults and the kernel zero-fills every page again: about a quarter of a SmolLM2-sized
// step (bench/train_throughput). This keeps large blocks on the heap and freed memory in the
// process, so later steps reuse pages that are already mapped. Peak RSS is unchanged (the buffers
// of one step are live at once anyway); memory freed after the peak is not returned until exit.
// Call once at the start of main(), before threads start.
void keep_freed_memory_for_reuse();

}  // namespace lora
