// The tokenizer against Hugging Face's own output: the shared goldens (ids, ids with special
// tokens, decoded text) for eight real tokenizers, llama.cpp's vocab test files, and the
// axolotl Llama-2 chat conversation.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>
#include <sstream>

#include "data/tokenizer/tokenizer.h"
#include "tests/support/test_support.h"
#include "tests/tokenizer_test_support.h"

namespace {
using lora::data::Tokenizer;
using nlohmann::json;

struct GoldenCase {
  const char* name;       // goldens/public/tokenizer/<name>.jsonl
  const char* tokenizer;  // the folder holding its tokenizer.json
};

class TokenizerGolden : public ::testing::TestWithParam<GoldenCase> {};

TEST_P(TokenizerGolden, MatchesHuggingFace) {
  const auto& c = GetParam();
  std::string golden = std::string("goldens/public/tokenizer/") + c.name + ".jsonl";
  LORA_REQUIRE_SHARED(golden);
  LORA_REQUIRE_SHARED(c.tokenizer);
  const Tokenizer& tok = lora::test::shared_tokenizer(c.tokenizer);
  std::ifstream in(lora::test::shared_dir() / golden);
  std::string line;
  int total = 0, ids_ok = 0, special_ok = 0, decoded_ok = 0;
  while (std::getline(in, line)) {
    json g = json::parse(line);
    const std::string text = g["text"];
    auto ids = tok.encode(text, false);
    auto with_special = tok.encode(text, true);
    auto expected_ids = g["ids"].get<std::vector<int32_t>>();
    auto decoded = tok.decode(expected_ids, false);
    ++total;
    ids_ok += ids == expected_ids;
    special_ok += with_special == g["ids_with_special"].get<std::vector<int32_t>>();
    decoded_ok += decoded == g["decoded"].get<std::string>();
    EXPECT_EQ(ids, expected_ids) << "text: " << json(text).dump();
    EXPECT_EQ(decoded, g["decoded"].get<std::string>()) << "text: " << json(text).dump();
  }
  EXPECT_GT(total, 100);
  EXPECT_EQ(ids_ok, total);
  EXPECT_EQ(special_ok, total);
  EXPECT_EQ(decoded_ok, total);
  std::cout << c.name << ": ids " << ids_ok << "/" << total << ", ids_with_special " << special_ok
            << "/" << total << ", decoded " << decoded_ok << "/" << total << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Shared, TokenizerGolden,
    ::testing::Values(GoldenCase{"qwen3", "tokenizers/qwen3"},
                      GoldenCase{"llama3", "tokenizers/llama3"},
                      GoldenCase{"llama3_1", "tokenizers/llama3_1"},
                      GoldenCase{"mistral-7b-v0.1", "tokenizers/mistral-7b-v0.1"},
                      GoldenCase{"gemma3", "tokenizers/gemma3"},
                      GoldenCase{"llama2-tinyllama-hf", "tokenizers/llama2-tinyllama"},
                      GoldenCase{"smollm2-135m-instruct", "tokenizers/smollm2-135m"},
                      GoldenCase{"stories260K", "models/stories260K"}),
    [](const auto& info) { return lora::test::test_name(info.param.name); });

struct VocabCase {
  const char* file;       // goldens/public/llamacpp/<file>.{inp,out}
  const char* tokenizer;  // the matching tokenizer.json (goldens/README.md)
};

class LlamaCppVocab : public ::testing::TestWithParam<VocabCase> {};

TEST_P(LlamaCppVocab, MatchesHuggingFace) {
  const auto& c = GetParam();
  std::string base = std::string("goldens/public/llamacpp/") + c.file;
  LORA_REQUIRE_SHARED(base + ".inp");
  LORA_REQUIRE_SHARED(c.tokenizer);
  const Tokenizer& tok = lora::test::shared_tokenizer(c.tokenizer);
  std::string inp = lora::test::read_file(lora::test::shared_dir() / (base + ".inp"));
  std::istringstream out(lora::test::read_file(lora::test::shared_dir() / (base + ".out")));
  const std::string sep = "\n__ggml_vocab_test__\n";
  int total = 0, ok = 0;
  std::size_t pos = 0, next;
  while ((next = inp.find(sep, pos)) != std::string::npos) {
    std::string text = inp.substr(pos, next - pos);
    pos = next + sep.size();
    std::string line;
    ASSERT_TRUE(std::getline(out, line)) << "fewer expected lines than cases";
    std::istringstream ls(line);
    std::vector<int32_t> expected;
    for (int32_t id; ls >> id;) expected.push_back(id);
    auto ids = tok.encode(text, false);
    ++total;
    ok += ids == expected;
    EXPECT_EQ(ids, expected) << "text: " << json(text).dump();
  }
  EXPECT_EQ(pos, inp.size());
  EXPECT_GT(total, 40);
  std::cout << c.file << " with " << c.tokenizer << ": " << ok << "/" << total << "\n";
}

INSTANTIATE_TEST_SUITE_P(
    Shared, LlamaCppVocab,
    ::testing::Values(VocabCase{"ggml-vocab-llama-bpe.gguf", "tokenizers/llama3"},
                      VocabCase{"ggml-vocab-llama-bpe.gguf", "tokenizers/llama3_1"},
                      VocabCase{"ggml-vocab-qwen2.gguf", "tokenizers/qwen3"},
                      VocabCase{"ggml-vocab-llama-spm.gguf", "tokenizers/llama2-tinyllama"},
                      VocabCase{"ggml-vocab-phi-3.gguf", "tokenizers/llama2-tinyllama"}),
    [](const auto& info) {
      return lora::test::test_name(std::string(info.param.file) + "_" + info.param.tokenizer);
    });

// axolotl's llama2_chat format (FastChat's Llama-2 prompt): the system prompt inside the first
// [INST], every turn pair closed by " </s><s>", and the whole string encoded with BOS.
TEST(TokenizerAxolotl, Llama2ChatConversationMatchesGoldenIds) {
  const std::string dir = "datasets/axolotl-fixtures/";
  LORA_REQUIRE_SHARED(dir + "conversation.tokenized_llama2chat.json");
  LORA_REQUIRE_SHARED("tokenizers/llama2-tinyllama");
  const Tokenizer& tok = lora::test::shared_tokenizer("tokenizers/llama2-tinyllama");
  json conv =
      json::parse(lora::test::read_file(lora::test::shared_dir() / dir / "conversation.json"));
  json golden = json::parse(lora::test::read_file(lora::test::shared_dir() / dir /
                                                  "conversation.tokenized_llama2chat.json"));
  // The Llama-2 default system prompt that FastChat's template uses.
  const std::string system =
      "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
      "possible, while being safe. Your answers should not include any harmful, unethical, "
      "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses "
      "are socially unbiased and positive in nature.\n\nIf a question does not make any sense, "
      "or is not factually coherent, explain why instead of answering something not correct. If "
      "you don't know the answer to a question, please don't share false information.";
  std::string text = "[INST] <<SYS>>\n" + system + "\n<</SYS>>\n\n";
  const auto& turns = conv["conversations"];
  for (std::size_t i = 0; i < turns.size(); ++i) {
    const std::string value = turns[i]["value"];
    if (i == 0)
      text += value + " ";
    else if (i % 2 == 0)
      text += "[INST] " + value + " ";
    else
      text += "[/INST] " + value + " </s><s>";
  }
  auto expected = golden["input_ids"].get<std::vector<int32_t>>();
  // The golden is padded to 4096 with <unk> (id 0); the conversation ends at the last </s><s>.
  while (!expected.empty() && expected.back() == 0) expected.pop_back();
  auto ids = tok.encode(text, true);
  EXPECT_EQ(ids.size(), expected.size());
  EXPECT_EQ(ids, expected);
}

}  // namespace
