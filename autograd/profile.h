// Per-op time split of a training step: where the seconds go, by op and by phase (forward,
// recomputation under gradient checkpointing, backward). Off unless a Tape is given an OpProfile,
// and then cheap: two clock reads per op call.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace lora::ag {

enum class OpPhase { Forward = 0, Recompute = 1, Backward = 2 };
inline constexpr int kNumOpPhases = 3;

class OpProfile {
 public:
  struct Entry {
    std::string op;
    double seconds[kNumOpPhases] = {0, 0, 0};
    int64_t calls[kNumOpPhases] = {0, 0, 0};
    double total() const { return seconds[0] + seconds[1] + seconds[2]; }
  };
  // Sorted by total time, largest first.
  std::vector<Entry> entries() const;
  double total_seconds() const;
  // A fixed-width table: op, forward / recompute / backward seconds, share of the total.
  std::string table() const;

 private:
  friend class OpTimer;
  void add(const char* op, OpPhase phase, double seconds);
  std::map<std::string, Entry> by_op_;
  // Time spent in timers nested inside each open timer: timers report exclusive time, so an op
  // that calls others (checkpoint, linear's base and LoRA parts) is not counted twice.
  std::vector<double> child_seconds_;
};

// Times one op call (exclusive of nested timers) into a profile; a null profile does nothing.
class OpTimer {
 public:
  OpTimer(OpProfile* profile, const char* op, OpPhase phase);
  ~OpTimer();
  OpTimer(const OpTimer&) = delete;
  OpTimer& operator=(const OpTimer&) = delete;

 private:
  OpProfile* profile_;
  const char* op_;
  OpPhase phase_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace lora::ag
