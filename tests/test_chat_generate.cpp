// `lora generate --chat` driven by piped turns, the chat prompt (a model's template, or the ChatML
// fallback), and per-pass adapter strengths that leave the shared adapters untouched.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/adapter_test_util.h"
#include "trainer/chat_prompt.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

using nlohmann::json;

std::vector<json> json_lines(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

TEST(ChatPrompt, FallsBackToChatMLAfterBos) {
  LORA_REQUIRE_SHARED(test::kStories);
  const ChatPrompt chat = ChatPrompt::load(test::stories_dir());
  EXPECT_FALSE(chat.has_model_template());
  const nlohmann::ordered_json messages = {{{"role", "system"}, {"content", "Be kind"}},
                                           {{"role", "user"}, {"content", "Hi"}}};
  EXPECT_EQ(chat.render(messages),
            "<s><|im_start|>system\nBe kind<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_EQ(chat.stop_strings(), (std::vector<std::string>{"<|im_end|>", "<|im_start|>"}));
}

TEST(ChatPrompt, UsesTheModelsTemplate) {
  LORA_REQUIRE_SHARED("tokenizers/qwen3/tokenizer_config.json");
  const ChatPrompt chat = ChatPrompt::load(test::shared_dir() / "tokenizers/qwen3");
  EXPECT_TRUE(chat.has_model_template());
  const std::string text = chat.render(json::array({{{"role", "user"}, {"content", "Hi"}}}));
  EXPECT_EQ(text, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_TRUE(chat.stop_strings().empty());  // its end of turn is an EOS id
}

TEST(GenerateChat, AnswersEachPipedTurnWithTheWholeConversation) {
  LORA_REQUIRE_SHARED(test::kStories);
  const std::vector<std::string> args = {
      "--json",      "generate",     "--model", test::stories_dir().string(),
      "--chat",      "--max-tokens", "12",      "--system-prompt",
      "Tell stories"};
  auto r = test::run_lora(args, "Once upon a time\n\nThe end\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto turns = json_lines(r.out);
  ASSERT_EQ(turns.size(), 2u) << r.out;  // the empty line is skipped
  EXPECT_EQ(turns[0]["prompt"], "Once upon a time");
  EXPECT_EQ(turns[1]["prompt"], "The end");
  // The second prompt holds the first exchange.
  EXPECT_GT(turns[1]["prompt_tokens"].get<int>(),
            turns[0]["prompt_tokens"].get<int>() + turns[0]["generated_tokens"].get<int>());
  for (const auto& t : turns) EXPECT_LE(t["generated_tokens"].get<int>(), 12);

  // Greedy is deterministic, and --prompt is the first turn.
  auto again = test::run_lora(args, "Once upon a time\n");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_EQ(json_lines(again.out)[0]["text"], turns[0]["text"]);
  auto args_with_prompt = args;
  args_with_prompt.insert(args_with_prompt.end(), {"--prompt", "Once upon a time"});
  auto from_flag = test::run_lora(args_with_prompt, "");
  ASSERT_EQ(from_flag.exit_code, 0) << from_flag.err;
  EXPECT_EQ(json_lines(from_flag.out)[0]["text"], turns[0]["text"]);
}

TEST(GenerateCli, StopStringEndsTheText) {
  LORA_REQUIRE_SHARED(test::kStories);
  const std::vector<std::string> base = {
      "--json", "generate", "--model", test::stories_dir().string(), "--max-tokens", "60"};
  auto full = test::run_lora(base);
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const std::string text = json::parse(full.out)["text"];
  const auto cut = text.find(" was");
  ASSERT_NE(cut, std::string::npos) << text;
  auto args = base;
  args.insert(args.end(), {"--stop", " was"});
  auto stopped = test::run_lora(args);
  ASSERT_EQ(stopped.exit_code, 0) << stopped.err;
  const json out = json::parse(stopped.out);
  EXPECT_EQ(out["text"], text.substr(0, cut));
  EXPECT_EQ(out["stop_reason"], "stop_string");
}

TEST(AdapterStack, PerPassStrengthsEqualTheAdaptersOwn) {
  LORA_REQUIRE_SHARED(test::kStories);
  const Model model = load_model(test::stories_dir());
  LoraAdapter adapter = test::adapter_with_random_b(model, test::kAllProj, 4, 8.0f, 0.1f, 3);
  adapter.strength = 0.5f;
  const Tensor own = test::prompt_logits(model, {&adapter}, 1);
  adapter.strength = 1.0f;
  AdapterStack stack;
  stack.adapters = {&adapter};
  stack.strengths = {0.5f};
  const Tensor per_pass = forward_logits(model, stack, test::kPromptIds, 1,
                                         static_cast<int64_t>(test::kPromptIds.size()));
  EXPECT_TRUE(test::same_bits(own, per_pass));
  EXPECT_EQ(adapter.strength, 1.0f);
  EXPECT_GT(test::max_abs_diff(own, test::prompt_logits(model, {&adapter}, 1)), 1e-3f);
}

}  // namespace
}  // namespace lora
