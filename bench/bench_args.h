// The size flags the matmul benchmarks share: --tokens N (rows of the activation) and --reps N.
#pragma once
#include <cstdlib>
#include <cstring>

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

}  // namespace lora::bench
