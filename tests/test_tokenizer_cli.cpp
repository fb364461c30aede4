// `lora tokenize` end to end: JSON lines in, JSON lines out, checked against the shared goldens
// (rendered chat templates and their ids, plain text ids and decodes), and bad input.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/test_support.h"
#include "tests/tokenizer_test_support.h"

namespace {
using lora::test::run_lora;
// Ordered, so messages keep their key order on the way to the template.
using json = nlohmann::ordered_json;

std::vector<json> read_lines(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(json::parse(line));
  return out;
}

std::vector<json> parse_lines(const std::string& text) {
  std::istringstream in(text);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

struct ChatCase {
  const char* golden;  // goldens/public/chat/<golden>.jsonl
  const char* model;   // the folder with tokenizer.json and tokenizer_config.json
};

class TokenizeCliChat : public ::testing::TestWithParam<ChatCase> {};

TEST_P(TokenizeCliChat, RendersAndEncodesLikeTheGoldens) {
  const auto& c = GetParam();
  std::string golden = std::string("goldens/public/chat/") + c.golden + ".jsonl";
  LORA_REQUIRE_SHARED(golden);
  auto cases = read_lines(lora::test::shared_dir() / golden);
  std::string input;
  for (const auto& g : cases) {
    json request = {{"messages", g["messages"]},
                    {"add_generation_prompt", g["add_generation_prompt"]},
                    {"template_kwargs", g["template_kwargs"]}};
    input += request.dump() + "\n";
  }
  auto r = run_lora({"tokenize", "--model", (lora::test::shared_dir() / c.model).string()}, input);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto got = parse_lines(r.out);
  ASSERT_EQ(got.size(), cases.size());
  int rendered_ok = 0, ids_ok = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    rendered_ok += got[i]["rendered"] == cases[i]["rendered"];
    ids_ok += got[i]["ids"] == cases[i]["ids"];
    EXPECT_EQ(got[i]["rendered"], cases[i]["rendered"]) << "conversation " << i;
    EXPECT_EQ(got[i]["ids"], cases[i]["ids"]) << "conversation " << i;
  }
  std::cout << c.golden << ": rendered " << rendered_ok << "/" << cases.size() << ", ids " << ids_ok
            << "/" << cases.size() << "\n";
}

INSTANTIATE_TEST_SUITE_P(Shared, TokenizeCliChat,
                         ::testing::Values(ChatCase{"qwen3", "tokenizers/qwen3"},
                                           ChatCase{"llama3", "tokenizers/llama3"},
                                           ChatCase{"llama3_1", "tokenizers/llama3_1"},
                                           ChatCase{"gemma3", "tokenizers/gemma3"},
                                           ChatCase{"llama2-tinyllama-hf",
                                                    "tokenizers/llama2-tinyllama"}),
                         [](const auto& info) { return lora::test::test_name(info.param.golden); });

TEST(TokenizeCli, TextLinesFromAFileMatchTheGoldens) {
  LORA_REQUIRE_SHARED("goldens/public/tokenizer/llama3_1.jsonl");
  auto cases = read_lines(lora::test::shared_dir() / "goldens/public/tokenizer/llama3_1.jsonl");
  lora::test::TempDir tmp("tokenize-cli");
  std::string input;
  for (const auto& g : cases) input += json{{"text", g["text"]}}.dump() + "\n";
  lora::test::write_file(tmp / "in.jsonl", input);
  auto r =
      run_lora({"tokenize", "--model", (lora::test::shared_dir() / "tokenizers/llama3_1").string(),
                "--input", (tmp / "in.jsonl").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto got = parse_lines(r.out);
  ASSERT_EQ(got.size(), cases.size());
  for (std::size_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(got[i]["ids"], cases[i]["ids"]) << cases[i]["text"];
    EXPECT_EQ(got[i]["ids_with_special"], cases[i]["ids_with_special"]) << cases[i]["text"];
    EXPECT_EQ(got[i]["decoded"], cases[i]["decoded"]) << cases[i]["text"];
  }
}

TEST(TokenizeCli, BadLinesAreErrorsThatNameTheLine) {
  LORA_REQUIRE_SHARED("models/stories260K/tokenizer.json");
  std::string model = (lora::test::shared_dir() / "models/stories260K").string();
  auto r = run_lora({"tokenize", "--model", model}, "{\"text\": \"ok\"}\n{\"text\": 3}\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("stdin:2"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("\"text\" must be a string"), std::string::npos) << r.err;
  EXPECT_EQ(parse_lines(r.out).size(), 1u);  // the good first line was answered

  r = run_lora({"tokenize", "--model", model}, "not json\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("stdin:1"), std::string::npos) << r.err;

  r = run_lora({"tokenize", "--model", model}, "{\"prompt\": \"x\"}\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("\"text\" or a \"messages\""), std::string::npos) << r.err;

  // stories260K has no chat template.
  r = run_lora({"tokenize", "--model", model},
               "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("chat_template"), std::string::npos) << r.err;

  r = run_lora({"tokenize", "--model", "/nonexistent/model"}, "{\"text\": \"x\"}\n");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("/nonexistent/model"), std::string::npos) << r.err;
}

}  // namespace
