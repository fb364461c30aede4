// Loops split over the OpenMP team only where a team of more than one thread runs them. GCC's
// OpenMP runtime makes a futex system call at every barrier, even in a region of one thread or
// one whose `if` clause is false; on a virtual machine that call costs over a microsecond, and a
// batch-1 decode step opened about 500 regions, most of them too small to split (SmolLM2-135M:
// 514 futex calls a token on one thread, bench/decode_profile). These helpers run such loops on
// the calling thread without entering OpenMP, and split the rest with one barrier per loop, or
// over a SpinTeam where the caller put one in scope.
#pragma once
#include <cstdint>
#include <memory>

#include "autograd/spin_team.h"

namespace lora {

// Whether a loop worth splitting (`worth_it`) gets more than one thread here: false on a
// one-thread team and inside a parallel region (a nested region runs on its one thread).
bool team_splits(bool worth_it);

// The threads a split loop runs on: the scoped SpinTeam's, else OpenMP's.
int team_size();

// A SpinTeam of team_size() threads, or nullptr where that is one thread, or more than the cores
// this process may use (members spinning for work would take turns on a core with those doing it).
std::unique_ptr<SpinTeam> make_spin_team();

// Member `member` of a team of `members`: its contiguous share [begin, end) of n iterations.
struct Share {
  int64_t begin, end;
};
inline Share share_of(int64_t n, int member, int members) {
  return {n * member / members, n * (member + 1) / members};
}

// body(scratch, i) for i in [0, n), split statically over the team where team_splits(worth_it),
// else a plain loop on the calling thread; each thread's `scratch` is one make_scratch() made
// before its first iteration.
template <class MakeScratch, class Body>
void parallel_for_with_scratch(int64_t n, bool worth_it, MakeScratch&& make_scratch, Body&& body) {
  if (!team_splits(worth_it && n > 1)) {
    auto scratch = make_scratch();
    for (int64_t i = 0; i < n; ++i) body(scratch, i);
    return;
  }
  if (SpinTeam* team = current_spin_team()) {
    team->run([&](int member) {
      auto scratch = make_scratch();
      const Share mine = share_of(n, member, team->size());
      for (int64_t i = mine.begin; i < mine.end; ++i) body(scratch, i);
    });
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

// body(i) for i in [0, n), split statically over the team where team_splits(worth_it), else a
// plain loop on the calling thread.
template <class Body>
void parallel_for(int64_t n, bool worth_it, Body&& body) {
  struct NoScratch {};
  parallel_for_with_scratch(
      n, worth_it, [] { return NoScratch{}; }, [&](NoScratch&, int64_t i) { body(i); });
}

}  // namespace lora
