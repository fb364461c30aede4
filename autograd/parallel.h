// Loops split over the OpenMP team only where a team of more than one thread runs them. GCC's
// OpenMP runtime makes a futex system call at every barrier, even in a region of one thread or
// one whose `if` clause is false; on a virtual machine that call costs over a microsecond, and a
// batch-1 decode step opened about 500 regions, most of them too small to split (SmolLM2-135M:
// 514 futex calls a token on one thread, bench/decode_profile). These helpers run such loops on
// the calling thread without entering OpenMP, and split the rest with one barrier per loop.
#pragma once
#include <cstdint>

namespace lora {

// Whether a loop worth splitting (`worth_it`) gets more than one thread here: false on a
// one-thread team and inside a parallel region (a nested region runs on its one thread).
bool team_splits(bool worth_it);

// body(i) for i in [0, n), split statically over the team where team_splits(worth_it), else a
// plain loop on the calling thread.
template <class Body>
void parallel_for(int64_t n, bool worth_it, Body&& body) {
  if (!team_splits(worth_it && n > 1)) {
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) body(i);
}

// As parallel_for, with per-thread working memory: body(scratch, i), where each thread's
// `scratch` is one make_scratch() made before its first iteration.
template <class MakeScratch, class Body>
void parallel_for_with_scratch(int64_t n, bool worth_it, MakeScratch&& make_scratch, Body&& body) {
  if (!team_splits(worth_it && n > 1)) {
    auto scratch = make_scratch();
    for (int64_t i = 0; i < n; ++i) body(scratch, i);
    return;
  }
#pragma omp parallel
  {
    auto scratch = make_scratch();
    // The region's closing barrier is the only one needed.
#pragma omp for schedule(static) nowait
    for (int64_t i = 0; i < n; ++i) body(scratch, i);
  }
}

}  // namespace lora
