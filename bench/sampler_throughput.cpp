// What picking one token costs next to a decode step: Sampler::sample on one logits row of a
// vocabulary's size (random normal logits, sd 3), per setting, the median over --reps calls.
//   build/bench/sampler_throughput [--vocab 151936] [--reps 200]
// Prints one JSON object per setting: greedy; temperature 0.8 alone; with top-p 0.9; with top-k
// 40 and top-p 0.95; with min-p 0.05.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "trainer/sampler.h"

namespace {

using namespace lora;

struct Setting {
  const char* name;
  SamplingOptions options;
};

std::vector<Setting> settings() {
  SamplingOptions warm;
  warm.temperature = 0.8f;
  SamplingOptions top_p = warm, top_k_p = warm, min_p = warm;
  top_p.top_p = 0.9f;
  top_k_p.top_k = 40;
  top_k_p.top_p = 0.95f;
  min_p.min_p = 0.05f;
  return {{"greedy", SamplingOptions{}},
          {"temp 0.8", warm},
          {"temp 0.8, top-p 0.9", top_p},
          {"temp 0.8, top-k 40, top-p 0.95", top_k_p},
          {"temp 0.8, min-p 0.05", min_p}};
}

}  // namespace

int main(int argc, char** argv) {
  int64_t vocab = 151936;
  int reps = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--vocab")) vocab = std::atoll(argv[i + 1]);
    if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(static_cast<std::size_t>(vocab));
  for (float& l : logits) l = normal(rng);
  const std::string isa = active_cpu_features().names();
  for (const Setting& s : settings()) {
    Sampler sampler(s.options);
    std::vector<double> micros;
    int64_t checksum = 0;  // keeps the calls from being optimized away
    for (int r = 0; r < reps + 5; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      checksum += sampler.sample(logits);
      const auto t1 = std::chrono::steady_clock::now();
      if (r >= 5) micros.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    std::sort(micros.begin(), micros.end());
    std::printf(
        "{\"bench\": \"sampler_throughput\", \"setting\": \"%s\", \"vocab\": %lld, \"reps\": %d, "
        "\"median_us\": %.1f, \"cpu\": \"%s\", \"checksum\": %lld}\n",
        s.name, static_cast<long long>(vocab), reps, micros[micros.size() / 2], isa.c_str(),
        static_cast<long long>(checksum));
  }
}
