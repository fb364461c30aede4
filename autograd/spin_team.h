// A thread team for runs of loops too short for an OpenMP region. Opening a region with GCC's
// runtime costs two futex system calls (the workers' release and the closing barrier), about
// 3 us on a virtual machine; a batch-1 decode step opens five a layer, which on SmolLM2-135M at
// two threads is a sixth of the step. Here the members wait for work by spinning on a counter and
// report by counting down, so handing out a loop costs two cache-line transfers. Members that
// see no work for a while sleep (a futex wait), so a team left idle costs no CPU.
#pragma once
#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace lora {

class SpinTeam {
 public:
  // A team of `threads` members: the calling thread of run() and threads - 1 workers.
  explicit SpinTeam(int threads);
  ~SpinTeam();
  SpinTeam(const SpinTeam&) = delete;
  SpinTeam& operator=(const SpinTeam&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // job(member) for every member in [0, size()), the caller as member 0; returns once all have
  // finished, rethrowing the first exception a member threw. One caller at a time.
  template <class Job>
  void run(Job&& job) {
    run_erased(&job, [](void* j, int member) { (*static_cast<Job*>(j))(member); });
  }

 private:
  using Call = void (*)(void*, int);
  void run_erased(void* job, Call call);
  void work(int member);
  void run_member(int member);

  std::vector<std::jthread> workers_;
  // Bumped once per job (and once to stop); members wait for it to change.
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};
  alignas(64) std::atomic<int> unfinished_{0};
  void* job_ = nullptr;
  Call call_ = nullptr;
  bool stopping_ = false;
  std::mutex failure_mutex_;
  std::exception_ptr failure_;
};

// While one is alive, the parallel loops of autograd/parallel.h called on this thread split over
// `team` instead of opening OpenMP regions, or over OpenMP's team where `team` is nullptr (as
// OpenMP keeps its team per thread, so does this).
class SpinTeamScope {
 public:
  explicit SpinTeamScope(SpinTeam* team);
  ~SpinTeamScope();
  SpinTeamScope(const SpinTeamScope&) = delete;
  SpinTeamScope& operator=(const SpinTeamScope&) = delete;

 private:
  SpinTeam* outer_;
};

// The team the calling thread's parallel loops split over, or nullptr: none in scope, or the
// thread is already running one of a team's jobs (a nested loop runs on its one thread).
SpinTeam* current_spin_team();

// Whether the calling thread is running one of a team's jobs.
bool running_spin_team_job();

}  // namespace lora
