// The chat goldens' token ids: the rendered text, encoded with the model's own tokenizer.json
// (no added special tokens), gives exactly the golden ids. Needs both the template engine and
// the tokenizer.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "data/chat_template.h"
#include "data/tokenizer.h"
#include "support/test_support.h"

namespace lora::data {
namespace {

struct GoldenSet {
  const char* golden;
  const char* tokenizer;
};
void PrintTo(const GoldenSet& set, std::ostream* os) { *os << set.golden; }

constexpr GoldenSet kSets[] = {{"qwen3", "qwen3"},
                               {"llama3", "llama3"},
                               {"llama3_1", "llama3_1"},
                               {"gemma3", "gemma3"},
                               {"llama2-tinyllama-hf", "llama2-tinyllama"}};

class ChatGoldenIds : public ::testing::TestWithParam<GoldenSet> {};

TEST_P(ChatGoldenIds, RenderedTextEncodesToGoldenIds) {
  const GoldenSet set = GetParam();
  const std::string golden_rel = std::string("goldens/public/chat/") + set.golden + ".jsonl";
  LORA_REQUIRE_SHARED(golden_rel);
  const auto dir = test::shared_dir() / "tokenizers" / set.tokenizer;
  const TokenizerConfig config = TokenizerConfig::load(dir);
  ASSERT_TRUE(config.chat_template.has_value()) << dir;
  const ChatTemplate tmpl = ChatTemplate::parse(*config.chat_template, set.golden);
  const Tokenizer tokenizer = Tokenizer::load(dir);

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
    const auto ids = tokenizer.encode(rendered, false);
    const auto expected = j.at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(ids, expected) << set.golden << " line " << lines;
    matched += ids == expected;
  }
  EXPECT_GE(lines, 12);
  EXPECT_EQ(matched, lines);
}

INSTANTIATE_TEST_SUITE_P(AllTemplates, ChatGoldenIds, ::testing::ValuesIn(kSets),
                         [](const auto& info) {
                           std::string name = info.param.golden;
                           for (auto& c : name)
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

}  // namespace
}  // namespace lora::data
