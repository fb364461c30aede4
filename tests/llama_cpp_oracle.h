// The real llama.cpp (node-llama-cpp 3.21.1's prebuilt CPU binaries, installed under
// scripts/llama_cpp by `scripts/setup.sh --test`) run on a GGUF file, for the tests to compare
// against.
#pragma once
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_support.h"
#include "trainer/gguf_model.h"
#include "trainer/transformer.h"

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

// log(sum exp(row[v])) over a row of logits, in double.
inline double log_sum_exp(const float* row, int64_t n) {
  const double mx = *std::max_element(row, row + n);
  double sum = 0;
  for (int64_t v = 0; v < n; ++v) sum += std::exp(double(row[v]) - mx);
  return mx + std::log(sum);
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
    const double lse = log_sum_exp(row, vocab);
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

// Our greedy tokens on the GGUF file `model` (after `prompt`) against llama.cpp's: the same, or
// parting only at a near tie. On quantized files llama.cpp's products round the activations to 8
// bits, which can flip a near tie of a small model's flat distribution. Where the texts part, both
// sides must see a near tie (each ranks the other's pick within kNearTie nats of its own), and
// over the shared context both must give llama.cpp's likeliest token the same log-probability
// within kSameModel, the bound test_gguf_kquant_model puts on the whole vocabulary of quantized
// files (measured there up to 0.095).
inline void expect_same_text_or_near_tie(const std::filesystem::path& model,
                                         const nlohmann::json& prompt, const nlohmann::json& mine,
                                         const nlohmann::json& theirs) {
  constexpr double kNearTie = 0.1, kSameModel = 0.15;
  std::size_t p = 0;
  while (p < mine.size() && p < theirs.size() && mine[p] == theirs[p]) ++p;
  if (p == mine.size() && p == theirs.size()) return;
  ASSERT_TRUE(p < mine.size() && p < theirs.size()) << "one text is a prefix of the other";
  nlohmann::json context = prompt;
  for (std::size_t k = 0; k < p; ++k) context.push_back(mine[k]);
  const nlohmann::json lp = llama_cpp_jobs(nlohmann::json::array(
      {nlohmann::json{{"model", model.string()}, {"tokens", context}, {"logprobs", true}}}));
  ASSERT_EQ(lp.size(), 1u);
  const std::vector<int32_t> ids(context.begin(), context.end());
  const Model ours = load_gguf_model(model);
  const int64_t vocab = ours.config.vocab_size, n = static_cast<int64_t>(ids.size());
  const std::vector<float> logits = forward_logits(ours, {}, ids, 1, n).data;
  ASSERT_EQ(lp[0]["logprobs"].size(), std::size_t(n));
  double our_gap = 0, their_gap = 0, top_disagreement = 0;
  for (int64_t t = 0; t < n; ++t) {
    const float* row = logits.data() + t * vocab;
    const nlohmann::json& theirs_t = lp[0]["logprobs"][t];
    int64_t top = 0;
    for (int64_t v = 1; v < vocab; ++v)
      if (theirs_t[v].get<double>() > theirs_t[top].get<double>()) top = v;
    const double our_top = double(row[top]) - log_sum_exp(row, vocab);
    top_disagreement = std::max(top_disagreement, std::abs(our_top - theirs_t[top].get<double>()));
    if (t == n - 1) {
      const int64_t a = theirs[p].get<int64_t>(), b = mine[p].get<int64_t>();
      their_gap = theirs_t[a].get<double>() - theirs_t[b].get<double>();
      our_gap = double(row[b]) - double(row[a]);
    }
  }
  std::cout << model.filename() << ": texts part at token " << p << "; log-probability gaps "
            << their_gap << " (llama.cpp) and " << our_gap << " (ours); the likeliest tokens "
            << "agree within " << top_disagreement << "\n";
  EXPECT_LT(their_gap, kNearTie) << model;
  EXPECT_LT(our_gap, kNearTie) << model;
  EXPECT_LT(top_disagreement, kSameModel) << model;
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
