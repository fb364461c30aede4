// The flags the benchmarks share: the matmul ones' --tokens N (rows of the activation) and
// --reps N, and the training ones' shape, batch, timing and output flags.
#pragma once
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

namespace lora::bench {

struct MatmulArgs {
  int tokens = 2048;
  int reps = 5;
};

inline MatmulArgs parse_matmul_args(int argc, char** argv) {
  MatmulArgs a;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--tokens"))
      a.tokens = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps"))
      a.reps = std::atoi(argv[i + 1]);
  }
  return a;
}

// What every training benchmark is told; each one sets its own defaults for batch and seq.
struct TrainArgs {
  std::string shape = "smollm2-135m";
  int64_t batch = 1, seq = 256;
  int steps = 2, warmup = 1;
  std::string json_path;
};

// Walks argv flag by flag: `on_flag(flag, value)` returns false for a flag it does not know, and
// calls `value()` to take the next argument. An unknown flag or a missing value throws, so that a
// typo never runs a long benchmark with a default.
template <class OnFlag>
void parse_flags(int argc, char** argv, OnFlag on_flag) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(k + " needs a value");
      return argv[++i];
    };
    if (!on_flag(k, value)) throw std::invalid_argument("unknown argument " + k);
  }
}

// Takes one of the TrainArgs flags; false when `k` is not one of them.
template <class Value>
bool parse_train_flag(const std::string& k, Value& value, TrainArgs& a) {
  if (k == "--shape")
    a.shape = value();
  else if (k == "--batch")
    a.batch = std::stoll(value());
  else if (k == "--seq")
    a.seq = std::stoll(value());
  else if (k == "--steps")
    a.steps = std::stoi(value());
  else if (k == "--warmup")
    a.warmup = std::stoi(value());
  else if (k == "--json")
    a.json_path = value();
  else
    return false;
  return true;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace lora::bench
