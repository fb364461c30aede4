// A software prefetch for the per-instruction-set kernels (internal linkage, like them).
#pragma once

namespace {

// An asm statement, not __builtin_prefetch: GCC 12 deletes a builtin prefetch that sits behind a
// branch or in a loop of its own (its dead-code pass finds no effect), and did so in every kernel
// of kernels_gemv.h; tests/test_frozen_gemv.cpp counts the prefetches in the compiled kernels.
inline void prefetch_line(const void* p) {
  asm volatile("prefetcht0 %0" : : "m"(*static_cast<const char*>(p)));
}

}  // namespace
