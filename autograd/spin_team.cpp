#include "autograd/spin_team.h"

#include <immintrin.h>

#include <chrono>
#include <utility>

namespace lora {

namespace {

// How long a member spins for the next job before it sleeps: longer than the gaps between a decode
// step's loops (a step then wakes a sleeping member once, at its first loop), short enough that a
// team left idle, as the server's sequences stepped in turn leave theirs, soon frees its core.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(50);

thread_local SpinTeam* scoped_team = nullptr;
thread_local bool running_job = false;

// The generation after `seen`: spins while it is due soon, then sleeps until it comes.
uint32_t wait_for_change(std::atomic<uint32_t>& generation, std::atomic<int>& sleepers,
                         uint32_t seen) {
  using clock = std::chrono::steady_clock;
  const auto until = clock::now() + kSpinBeforeSleep;
  for (int polls = 1;; ++polls) {
    const uint32_t now = generation.load(std::memory_order_acquire);
    if (now != seen) return now;
    _mm_pause();
    if (polls % 64 == 0 && clock::now() > until) break;
  }
  // Announced before the last look, and read by run() after its bump (both sequentially
  // consistent): either run() sees a sleeper and wakes it, or the look sees the bump.
  sleepers.fetch_add(1);
  uint32_t now;
  while ((now = generation.load()) == seen) generation.wait(seen);
  sleepers.fetch_sub(1);
  return now;
}

}  // namespace

SpinTeam::SpinTeam(int threads) {
  for (int member = 1; member < threads; ++member)
    workers_.emplace_back([this, member] { work(member); });
}

SpinTeam::~SpinTeam() {
  stopping_ = true;
  generation_.fetch_add(1);
  generation_.notify_all();
  workers_.clear();  // joins
}

void SpinTeam::run_erased(void* job, Call call) {
  job_ = job;
  call_ = call;
  if (workers_.empty()) {
    run_member(0);
  } else {
    unfinished_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1);
    if (sleepers_.load() > 0) generation_.notify_all();
    run_member(0);
    while (unfinished_.load(std::memory_order_acquire) > 0) _mm_pause();
  }
  if (failure_) std::rethrow_exception(std::exchange(failure_, nullptr));
}

void SpinTeam::work(int member) {
  uint32_t seen = 0;
  for (;;) {
    seen = wait_for_change(generation_, sleepers_, seen);
    if (stopping_) return;
    run_member(member);
    unfinished_.fetch_sub(1, std::memory_order_release);
  }
}

void SpinTeam::run_member(int member) {
  running_job = true;
  try {
    call_(job_, member);
  } catch (...) {
    const std::lock_guard lock(failure_mutex_);
    if (!failure_) failure_ = std::current_exception();
  }
  running_job = false;
}

SpinTeamScope::SpinTeamScope(SpinTeam* team) : outer_(std::exchange(scoped_team, team)) {}

SpinTeamScope::~SpinTeamScope() { scoped_team = outer_; }

SpinTeam* current_spin_team() { return running_job ? nullptr : scoped_team; }

bool running_spin_team_job() { return running_job; }

}  // namespace lora
