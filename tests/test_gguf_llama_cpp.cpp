// loracpp against the real llama.cpp on the same GGUF files: log-probabilities of every vocabulary
// entry at every position within 1e-4 on the F32 file, greedy text identical on every file.
#include <gtest/gtest.h>

#include <cmath>

#include "llama_cpp_oracle.h"
#include "trainer/gguf_model.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

using json = nlohmann::json;

std::filesystem::path gguf(const std::string& type) {
  return test::shared_dir() / "models/stories260K-gguf" / ("stories260K-" + type + ".gguf");
}

std::vector<double> log_softmax(const float* logits, int64_t n) {
  double mx = logits[0], sum = 0;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, double(logits[i]));
  for (int64_t i = 0; i < n; ++i) sum += std::exp(double(logits[i]) - mx);
  std::vector<double> out(n);
  for (int64_t i = 0; i < n; ++i) out[i] = double(logits[i]) - mx - std::log(sum);
  return out;
}

TEST(GgufLlamaCpp, LogProbabilitiesMatchOnTheF32File) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-f32.gguf");
  LORA_REQUIRE_LLAMA_CPP();
  const std::vector<int32_t> ids = {1,   403, 407, 261, 378, 432, 383,
                                    286, 261, 376, 298, 315, 421, 395};
  const json ref = test::llama_cpp(
      {"--model", gguf("f32").string(), "--tokens", test::join_ids(ids), "--logprobs"});
  ASSERT_TRUE(ref.is_object());
  const Model model = load_model(gguf("f32"));
  const Tensor logits = forward_logits(model, {}, ids, 1, int64_t(ids.size()));
  const int64_t vocab = model.config.vocab_size;
  ASSERT_EQ(ref["logprobs"].size(), ids.size());
  double worst = 0;
  for (std::size_t t = 0; t < ids.size(); ++t) {
    const auto mine = log_softmax(logits.data.data() + t * vocab, vocab);
    const auto& theirs = ref["logprobs"][t];
    ASSERT_EQ(int64_t(theirs.size()), vocab);
    for (int64_t v = 0; v < vocab; ++v) {
      const double d = std::abs(mine[v] - theirs[v].get<double>());
      if (d > 1e-4)
        ADD_FAILURE() << "position " << t << " token " << v << ": " << mine[v] << " vs "
                      << theirs[v];
      worst = std::max(worst, d);
    }
  }
  EXPECT_LT(worst, 1e-4);
  RecordProperty("max_abs_logprob_difference", std::to_string(worst));
}

TEST(GgufLlamaCpp, GreedyTextIdenticalOnEveryFile) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-q8_0.gguf");
  LORA_REQUIRE_LLAMA_CPP();
  for (const char* type : {"f32", "f16", "q8_0"}) {
    const json ref = test::llama_cpp(
        {"--model", gguf(type).string(), "--tokens", "1,403,407,261,378", "--greedy", "40"});
    ASSERT_TRUE(ref.is_object());
    auto r = test::run_lora({"--json", "generate", "--model", gguf(type).string(), "--prompt",
                             "Once upon a time", "--max-tokens", "40"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json mine = json::parse(r.out);
    EXPECT_EQ(mine["tokens"], ref["tokens"]) << type;
    EXPECT_EQ(mine["text"], ref["text"]) << type;
  }
}

}  // namespace
}  // namespace lora
