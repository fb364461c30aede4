// The chat goldens: every conversation renders, byte for byte, to what @huggingface/jinja made
// from the model's own tokenizer_config.json (see ../shared/goldens/README.md).
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "support/test_support.h"

namespace lora::data {
namespace {

struct GoldenSet {
  const char* golden;     // goldens/public/chat/<golden>.jsonl
  const char* tokenizer;  // tokenizers/<tokenizer>/
};
constexpr GoldenSet kSets[] = {{"qwen3", "qwen3"},
                               {"llama3", "llama3"},
                               {"llama3_1", "llama3_1"},
                               {"gemma3", "gemma3"},
                               {"llama2-tinyllama-hf", "llama2-tinyllama"}};

void PrintTo(const GoldenSet& set, std::ostream* os) { *os << set.golden; }

class ChatGoldens : public ::testing::TestWithParam<GoldenSet> {};

TEST_P(ChatGoldens, RenderedTextMatchesExactly) {
  const GoldenSet set = GetParam();
  const std::string golden_rel = std::string("goldens/public/chat/") + set.golden + ".jsonl";
  LORA_REQUIRE_SHARED(golden_rel);
  const auto dir = test::shared_dir() / "tokenizers" / set.tokenizer;
  const TokenizerConfig config = TokenizerConfig::load(dir);
  ASSERT_TRUE(config.chat_template.has_value()) << dir;
  const ChatTemplate tmpl = ChatTemplate::parse(*config.chat_template, set.golden);

  std::ifstream in(test::shared_dir() / golden_rel);
  std::string line;
  int lines = 0, matched = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    ++lines;
    const auto j = nlohmann::ordered_json::parse(line);
    const std::string rendered =
        render_chat(tmpl, config, j.at("messages"), j.at("add_generation_prompt").get<bool>(),
                    j.at("template_kwargs"));
    const std::string expected = j.at("rendered").get<std::string>();
    EXPECT_EQ(rendered, expected) << set.golden << " line " << lines;
    matched += rendered == expected;
  }
  EXPECT_GE(lines, 12);
  EXPECT_EQ(matched, lines);
}

INSTANTIATE_TEST_SUITE_P(AllTemplates, ChatGoldens, ::testing::ValuesIn(kSets),
                         [](const auto& info) {
                           std::string name = info.param.golden;
                           for (auto& c : name)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

}  // namespace
}  // namespace lora::data
