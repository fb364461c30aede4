// autograd/parallel.h: loops not worth splitting, or on a one-thread team, run on the calling
// thread without entering an OpenMP region at all (omp_get_level() counts inactive regions too,
// so it tells); loops worth splitting run every index once on the whole team, OpenMP's or a
// SpinTeam put in scope.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "autograd/parallel.h"

namespace lora {
namespace {

// Restores the team size a test changed.
struct TeamSize {
  int saved = omp_get_max_threads();
  explicit TeamSize(int threads) { omp_set_num_threads(threads); }
  ~TeamSize() { omp_set_num_threads(saved); }
};

// Per index: how often it ran, and the region level and team size it ran at (each index is
// written by the one thread that runs it).
struct Seen {
  std::vector<std::atomic<int>> hits;
  std::vector<int> level, team;
  explicit Seen(int64_t n)
      : hits(static_cast<std::size_t>(n)),
        level(static_cast<std::size_t>(n)),
        team(static_cast<std::size_t>(n)) {}
  void record(int64_t i) {
    const auto at = static_cast<std::size_t>(i);
    hits[at]++;
    level[at] = omp_get_level();
    team[at] = omp_get_num_threads();
  }
  bool each_once() const {
    return std::all_of(hits.begin(), hits.end(), [](const auto& h) { return h == 1; });
  }
  int max_level() const { return *std::max_element(level.begin(), level.end()); }
  int max_team() const { return *std::max_element(team.begin(), team.end()); }
};

TEST(Parallel, SmallLoopsRunOnTheCallingThreadWithoutARegion) {
  const TeamSize two(2);
  Seen plain(1000), with_scratch(1000);
  parallel_for(1000, false, [&](int64_t i) { plain.record(i); });
  parallel_for_with_scratch(
      1000, false, [] { return 0; }, [&](int&, int64_t i) { with_scratch.record(i); });
  for (const Seen* s : {&plain, &with_scratch}) {
    EXPECT_TRUE(s->each_once());
    EXPECT_EQ(s->max_level(), 0);
  }
}

TEST(Parallel, OneThreadTeamsAndNestedLoopsEnterNoRegion) {
  {
    const TeamSize one(1);
    Seen s(1000);
    parallel_for(1000, true, [&](int64_t i) { s.record(i); });
    EXPECT_TRUE(s.each_once());
    EXPECT_EQ(s.max_level(), 0);
  }
  const TeamSize two(2);
  Seen inner(4 * 100);
#pragma omp parallel for
  for (int outer = 0; outer < 4; ++outer)
    parallel_for(100, true, [&](int64_t i) { inner.record(outer * 100 + i); });
  EXPECT_TRUE(inner.each_once());
  EXPECT_EQ(inner.max_level(), 1);  // only the outer region
}

TEST(Parallel, LoopsWorthSplittingRunOnTheTeamWithOneScratchPerThread) {
  const TeamSize two(2);
  Seen s(10000);
  std::atomic<int> scratches{0};
  parallel_for_with_scratch(
      10000, true,
      [&] {
        ++scratches;
        return std::vector<int>(1, 0);
      },
      [&](std::vector<int>& mine, int64_t i) {
        ++mine[0];
        s.record(i);
      });
  EXPECT_TRUE(s.each_once());
  EXPECT_EQ(s.max_level(), 1);
  EXPECT_EQ(s.max_team(), 2);
  EXPECT_EQ(scratches, 2);
}

// The threads that ran a loop's indices.
struct Runners {
  std::mutex mutex;
  std::set<std::thread::id> ids;
  void record() {
    const std::lock_guard lock(mutex);
    ids.insert(std::this_thread::get_id());
  }
};

TEST(SpinTeam, ScopedLoopsRunOnTheTeamWithoutAnOpenMPRegion) {
  const TeamSize one(1);  // the team, not OpenMP's settings, decides the split
  SpinTeam team(3);
  const SpinTeamScope scope(&team);
  EXPECT_EQ(team_size(), 3);
  Seen s(10000);
  Runners runners;
  std::atomic<int> scratches{0};
  parallel_for_with_scratch(
      10000, true,
      [&] {
        ++scratches;
        return 0;
      },
      [&](int&, int64_t i) {
        s.record(i);
        runners.record();
      });
  EXPECT_TRUE(s.each_once());
  EXPECT_EQ(s.max_level(), 0);
  EXPECT_EQ(runners.ids.size(), 3u);
  EXPECT_EQ(scratches, 3);
}

TEST(SpinTeam, LoopsInsideAJobRunOnTheirOneThread) {
  SpinTeam team(2);
  const SpinTeamScope scope(&team);
  std::vector<Runners> inner(4);
  Seen s(4 * 100);
  parallel_for(4, true, [&](int64_t outer) {
    EXPECT_FALSE(team_splits(true));
    parallel_for(100, true, [&](int64_t i) {
      s.record(outer * 100 + i);
      inner[outer].record();
    });
  });
  EXPECT_TRUE(s.each_once());
  EXPECT_EQ(s.max_level(), 0);
  for (const Runners& r : inner) EXPECT_EQ(r.ids.size(), 1u);
}

TEST(SpinTeam, WakesMembersThatSleptAndOutlivesItsScope) {
  SpinTeam team(2);
  for (int round = 0; round < 3; ++round) {
    // Idle far past the spinning time: the worker sleeps, and the next loop must wake it.
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    const SpinTeamScope scope(&team);
    Seen s(1000);
    Runners runners;
    parallel_for(1000, true, [&](int64_t i) {
      s.record(i);
      runners.record();
    });
    EXPECT_TRUE(s.each_once());
    EXPECT_EQ(runners.ids.size(), 2u);
  }
  EXPECT_EQ(current_spin_team(), nullptr);  // scopes end with their block
}

TEST(SpinTeam, MadeOnlyForTeamsThatFitTheCores) {
  {
    const TeamSize one(1);
    EXPECT_EQ(make_spin_team(), nullptr);
  }
  {
    const TeamSize more(omp_get_num_procs() + 1);
    EXPECT_EQ(make_spin_team(), nullptr);
  }
  if (omp_get_num_procs() < 2) GTEST_SKIP() << "one core: no team of two fits";
  const TeamSize two(2);
  const std::unique_ptr<SpinTeam> team = make_spin_team();
  ASSERT_NE(team, nullptr);
  EXPECT_EQ(team->size(), 2);
}

TEST(SpinTeam, AMembersExceptionReachesTheCaller) {
  SpinTeam team(2);
  const SpinTeamScope scope(&team);
  EXPECT_THROW(parallel_for(100, true,
                            [](int64_t i) {
                              if (i == 99) throw std::runtime_error("last index");
                            }),
               std::runtime_error);
  Seen s(100);  // and the team goes on working
  parallel_for(100, true, [&](int64_t i) { s.record(i); });
  EXPECT_TRUE(s.each_once());
}

}  // namespace
}  // namespace lora
