// The real llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU binaries, installed under
// scripts/llama_cpp by `scripts/setup.sh --test`) run on a GGUF file, for the tests to compare
// against.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace lora::test {

inline std::filesystem::path llama_cpp_dir() {
  return std::filesystem::path(LORA_SOURCE_DIR) / "scripts" / "llama_cpp";
}

inline bool have_llama_cpp() {
  return std::filesystem::exists(llama_cpp_dir() / "node_modules" / "node-llama-cpp" /
                                 "package.json") &&
         run_program({"node", "--version"}).exit_code == 0;
}

// Runs oracle.mjs with `args`; fails the test (returns null) when it does not answer JSON.
inline nlohmann::json llama_cpp(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"node", (llama_cpp_dir() / "oracle.mjs").string()};
  argv.insert(argv.end(), args.begin(), args.end());
  const auto r = run_program(argv);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return nullptr;
  return nlohmann::json::parse(r.out);
}

// Runs every job of `jobs` (a list of {"model", "lora", "tokens", "greedy" | "logprobs"}) in one
// start-up of llama.cpp; returns the answers in order (null on failure, after failing the test).
inline nlohmann::json llama_cpp_jobs(const nlohmann::json& jobs) {
  const auto r =
      run_program({"node", (llama_cpp_dir() / "oracle.mjs").string(), "--jobs"}, jobs.dump());
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return nullptr;
  auto answers = nlohmann::json::parse(r.out);
  EXPECT_EQ(answers.size(), jobs.size());
  return answers;
}

// Our logits [positions, vocab] against llama.cpp's log-probabilities of the same positions:
// the largest and mean |difference| of log-softmax, and how far our log-probabilities spread.
struct LogprobComparison {
  double worst = 0, mean = 0, spread = 0;
  std::size_t worst_position = 0;
  int64_t worst_token = 0;
};
inline LogprobComparison compare_logprobs(const std::vector<float>& logits, int64_t vocab,
                                          const nlohmann::json& ref_logprobs) {
  LogprobComparison c;
  const std::size_t positions = logits.size() / static_cast<std::size_t>(vocab);
  EXPECT_EQ(ref_logprobs.size(), positions);
  double total = 0;
  for (std::size_t t = 0; t < std::min(positions, ref_logprobs.size()); ++t) {
    const float* row = logits.data() + t * vocab;
    const double mx = *std::max_element(row, row + vocab);
    double sum = 0;
    for (int64_t v = 0; v < vocab; ++v) sum += std::exp(double(row[v]) - mx);
    const double lse = mx + std::log(sum);
    EXPECT_EQ(int64_t(ref_logprobs[t].size()), vocab);
    for (int64_t v = 0; v < std::min<int64_t>(vocab, ref_logprobs[t].size()); ++v) {
      const double mine = double(row[v]) - lse;
      const double d = std::abs(mine - ref_logprobs[t][v].get<double>());
      if (d > c.worst) {
        c.worst = d;
        c.worst_position = t;
        c.worst_token = v;
      }
      total += d;
      c.spread = std::max(c.spread, -mine);
    }
  }
  c.mean = total / double(positions * vocab);
  return c;
}

inline std::string join_ids(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : ",") + std::to_string(id);
  return s;
}

}  // namespace lora::test

#define LORA_REQUIRE_LLAMA_CPP()                                          \
  do {                                                                    \
    if (!::lora::test::have_llama_cpp())                                  \
      LORA_MISSING_REFERENCE(                                             \
          "llama.cpp oracle not installed (scripts/setup.sh --test runs " \
          "npm ci in scripts/llama_cpp)");                                \
  } while (0)
