// Prompt masking: the axolotl Llama-2 chat golden (ids and labels), and multi-turn chats through
// the Qwen3 and Llama-3 templates, where every assistant turn (with its end-of-turn token) is
// trained and every system/user span is masked.
#include <gtest/gtest.h>

#include "data/dataset_encode.h"
#include "support/test_support.h"

namespace lora::data {
namespace {

using test::shared_dir;

Record chat_record(const nlohmann::ordered_json& messages) {
  Record r;
  r.format = RecordFormat::chat;
  r.messages = messages;
  r.line = 1;
  return r;
}

TEST(Masking, AxolotlLlama2ChatGoldenIdsAndLabels) {
  LORA_REQUIRE_SHARED("datasets/axolotl-fixtures/conversation.tokenized_llama2chat.json");
  LORA_REQUIRE_SHARED("tokenizers/llama2-tinyllama/tokenizer.json");
  const auto dir = shared_dir() / "tokenizers/llama2-tinyllama";
  const auto tok = Tokenizer::load(dir);
  const auto cfg = TokenizerConfig::load(dir);
  EncodeOptions opts;
  opts.mask_prompt = true;
  opts.chat_format = "llama2";
  opts.max_seq_length = 1 << 20;
  RecordEncoder encoder(tok, cfg, opts);

  // ShareGPT -> messages, with the Llama-2 default system prompt axolotl's fastchat format adds.
  auto conv = nlohmann::json::parse(
      test::read_file(shared_dir() / "datasets/axolotl-fixtures/conversation.json"));
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  messages.push_back(
      {{"role", "system"},
       {"content",
        "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
        "possible, while being safe. Your answers should not include any harmful, unethical, "
        "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
        "are socially unbiased and positive in nature.\n\nIf a question does not make any sense, "
        "or is not factually coherent, explain why instead of answering something not correct. "
        "If you don't know the answer to a question, please don't share false information."}});
  for (const auto& turn : conv["conversations"])
    messages.push_back(
        {{"role", turn["from"] == "human" ? "user" : "assistant"}, {"content", turn["value"]}});
  const Example ex = encoder.encode(chat_record(messages));

  auto golden = nlohmann::json::parse(test::read_file(
      shared_dir() / "datasets/axolotl-fixtures/conversation.tokenized_llama2chat.json"));
  std::vector<int32_t> ids;
  std::vector<int> labels;
  for (std::size_t i = 0; i < golden["input_ids"].size(); ++i) {
    if (!golden["attention_mask"][i].get<bool>()) break;  // padding
    ids.push_back(golden["input_ids"][i].get<int32_t>());
    labels.push_back(golden["labels"][i].get<int>());
  }
  ASSERT_EQ(ex.ids.size(), ids.size());
  EXPECT_EQ(ex.ids, ids);
  std::size_t trained = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(ex.trained[i] != 0, labels[i] != -100) << "token " << i;
    trained += ex.trained[i];
  }
  EXPECT_GT(trained, 1000u);  // six answers
}

// For a chat template: the decoded text of every trained run must be exactly an assistant
// content plus the end-of-turn marker, and every user/system content must be untrained.
void check_multiturn(const std::string& tokenizer_dir, const std::string& end_of_turn,
                     const nlohmann::ordered_json& kwargs = nlohmann::ordered_json::object()) {
  const auto dir = shared_dir() / "tokenizers" / tokenizer_dir;
  const auto tok = Tokenizer::load(dir);
  const auto cfg = TokenizerConfig::load(dir);
  EncodeOptions opts;
  opts.mask_prompt = true;
  opts.template_kwargs = kwargs;
  RecordEncoder encoder(tok, cfg, opts);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array({
      {{"role", "system"}, {"content", "You answer in one word."}},
      {{"role", "user"}, {"content", "Capital of France?"}},
      {{"role", "assistant"}, {"content", "Paris."}},
      {{"role", "user"}, {"content", "And of Italy?"}},
      {{"role", "assistant"}, {"content", "Rome."}},
      {{"role", "user"}, {"content", "Spain?"}},
      {{"role", "assistant"}, {"content", "Madrid."}},
  });
  const Example ex = encoder.encode(chat_record(messages));
  std::vector<std::string> trained_runs;
  std::vector<int32_t> run, untrained;
  for (std::size_t i = 0; i <= ex.ids.size(); ++i) {
    const bool t = i < ex.ids.size() && ex.trained[i];
    if (t) run.push_back(ex.ids[i]);
    if (i < ex.ids.size() && !t) untrained.push_back(ex.ids[i]);
    if (!t && !run.empty()) {
      trained_runs.push_back(tok.decode(run));
      run.clear();
    }
  }
  ASSERT_EQ(trained_runs.size(), 3u) << "every assistant turn is trained, each as one span";
  const char* answers[] = {"Paris.", "Rome.", "Madrid."};
  for (int i = 0; i < 3; ++i) {
    const std::string& got = trained_runs[std::size_t(i)];
    EXPECT_NE(got.find(answers[i]), std::string::npos) << got;
    EXPECT_TRUE(got.ends_with(end_of_turn) || got.ends_with(end_of_turn + "\n"))
        << "[" << got << "]";
    EXPECT_EQ(got.find("user"), std::string::npos) << got;
  }
  const std::string masked = tok.decode(untrained);
  for (const char* prompt :
       {"You answer in one word.", "Capital of France?", "And of Italy?", "Spain?"})
    EXPECT_NE(masked.find(prompt), std::string::npos) << prompt;
  // No BOS twice when the template writes it.
  if (cfg.bos_token && ex.ids.size() > 1) {
    auto bos = tok.token_to_id(*cfg.bos_token);
    if (bos) {
      EXPECT_FALSE(ex.ids[0] == *bos && ex.ids[1] == *bos);
    }
  }
}

TEST(Masking, Qwen3MultiTurnTrainsEveryAssistantTurn) {
  LORA_REQUIRE_SHARED("tokenizers/qwen3/tokenizer_config.json");
  check_multiturn("qwen3", "<|im_end|>", {{"enable_thinking", false}});
}

TEST(Masking, Llama3MultiTurnTrainsEveryAssistantTurn) {
  LORA_REQUIRE_SHARED("tokenizers/llama3/tokenizer_config.json");
  check_multiturn("llama3", "<|eot_id|>");
}

TEST(Masking, PromptCompletionWithoutTemplateIsConcatenated) {
  LORA_REQUIRE_SHARED("models/stories260K/tokenizer.json");
  const auto dir = shared_dir() / "models/stories260K";
  const auto tok = Tokenizer::load(dir);
  const auto cfg = TokenizerConfig::load(dir);
  ASSERT_FALSE(cfg.chat_template);
  EncodeOptions opts;
  opts.mask_prompt = true;
  RecordEncoder encoder(tok, cfg, opts);
  Record r;
  r.format = RecordFormat::prompt_completion;
  r.prompt = "Once upon a time";
  r.completion = " there was a cat.";
  const Example ex = encoder.encode(r);
  EXPECT_EQ(ex.ids, [&] {
    auto ids = tok.encode("Once upon a time there was a cat.", true);
    ids.push_back(2);  // EOS, as mlx-lm appends it
    return ids;
  }());
  const auto prompt_len = tok.encode("Once upon a time", true).size();
  for (std::size_t i = 0; i < ex.ids.size(); ++i)
    EXPECT_EQ(ex.trained[i] != 0, i >= prompt_len) << i;

  opts.mask_prompt = false;  // without masking every token but the first is a target
  const Example all = RecordEncoder(tok, cfg, opts).encode(r);
  EXPECT_EQ(all.num_trained(), int64_t(all.ids.size()) - 1);
}

}  // namespace
}  // namespace lora::data
