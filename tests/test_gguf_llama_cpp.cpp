// loracpp against the real llama.cpp on the same GGUF files: log-probabilities of every vocabulary
// entry at every position within 1e-4 on the F32 file, greedy text identical on every file.
#include <gtest/gtest.h>

#include "llama_cpp_oracle.h"
#include "trainer/gguf_model.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

using json = nlohmann::json;

std::filesystem::path gguf(const std::string& type) {
  return test::shared_dir() / "models/stories260K-gguf" / ("stories260K-" + type + ".gguf");
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
  const auto c = test::compare_logprobs(logits.data, vocab, ref["logprobs"]);
  EXPECT_LT(c.worst, 1e-4) << "position " << c.worst_position << ", token " << c.worst_token;
  RecordProperty("max_abs_logprob_difference", std::to_string(c.worst));
}

TEST(GgufLlamaCpp, GreedyTextIdenticalOnEveryFile) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-q8_0.gguf");
  LORA_REQUIRE_LLAMA_CPP();
  const std::vector<std::string> types = {"f32", "f16", "q8_0"};
  json jobs = json::array();
  for (const auto& type : types)
    jobs.push_back(
        {{"model", gguf(type).string()}, {"tokens", {1, 403, 407, 261, 378}}, {"greedy", 40}});
  const json refs = test::llama_cpp_jobs(jobs);
  ASSERT_EQ(refs.size(), types.size());
  for (std::size_t i = 0; i < types.size(); ++i) {
    auto r = test::run_lora({"--json", "generate", "--model", gguf(types[i]).string(), "--prompt",
                             "Once upon a time", "--max-tokens", "40"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json mine = json::parse(r.out);
    EXPECT_EQ(mine["tokens"], refs[i]["tokens"]) << types[i];
    EXPECT_EQ(mine["text"], refs[i]["text"]) << types[i];
  }
}

}  // namespace
}  // namespace lora
