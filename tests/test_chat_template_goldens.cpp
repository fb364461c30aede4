// The chat goldens (see ../shared/goldens/README.md): every conversation renders, byte for byte,
// to what @huggingface/jinja made from the model's own tokenizer_config.json, and that text
// encodes (no added special tokens) to the golden ids with the model's tokenizer.json.
#include <gtest/gtest.h>

#include <fstream>
#include <functional>
#include <string>

#include "data/chat_template.h"
#include "data/tokenizer/tokenizer.h"
#include "support/test_support.h"

namespace lora::data {
namespace {

struct GoldenSet {
  const char* golden;     // goldens/public/chat/<golden>.jsonl
  const char* tokenizer;  // tokenizers/<tokenizer>/
};
void PrintTo(const GoldenSet& set, std::ostream* os) { *os << set.golden; }

constexpr GoldenSet kSets[] = {{"qwen3", "qwen3"},
                               {"llama3", "llama3"},
                               {"llama3_1", "llama3_1"},
                               {"gemma3", "gemma3"},
                               {"llama2-tinyllama-hf", "llama2-tinyllama"}};

std::filesystem::path tokenizer_dir(const GoldenSet& set) {
  return test::shared_dir() / "tokenizers" / set.tokenizer;
}

// Renders every golden line of `set` with the model's template and hands the rendering and
// the line to `check`, which returns whether it matched. Returns {lines, matched}.
std::pair<int, int> for_each_golden(
    const GoldenSet& set,
    const std::function<bool(const std::string& rendered, const nlohmann::ordered_json& line)>&
        check) {
  const TokenizerConfig config = TokenizerConfig::load(tokenizer_dir(set));
  EXPECT_TRUE(config.chat_template.has_value()) << tokenizer_dir(set);
  if (!config.chat_template) return {0, 0};
  const ChatTemplate tmpl = ChatTemplate::parse(*config.chat_template, set.golden);
  std::ifstream in(test::shared_dir() / "goldens/public/chat" /
                   (std::string(set.golden) + ".jsonl"));
  std::string text;
  int lines = 0, matched = 0;
  while (std::getline(in, text)) {
    if (text.empty()) continue;
    ++lines;
    const auto j = nlohmann::ordered_json::parse(text);
    const std::string rendered =
        render_chat(tmpl, config, j.at("messages"), j.at("add_generation_prompt").get<bool>(),
                    j.at("template_kwargs"));
    matched += check(rendered, j) ? 1 : 0;
  }
  return {lines, matched};
}

class ChatGoldens : public ::testing::TestWithParam<GoldenSet> {
 protected:
  void SetUp() override {
    LORA_REQUIRE_SHARED(std::string("goldens/public/chat/") + GetParam().golden + ".jsonl");
  }
};

TEST_P(ChatGoldens, RenderedTextMatchesExactly) {
  const auto [lines, matched] =
      for_each_golden(GetParam(), [](const std::string& rendered, const auto& j) {
        const std::string expected = j.at("rendered").template get<std::string>();
        EXPECT_EQ(rendered, expected) << j.at("messages").dump();
        return rendered == expected;
      });
  EXPECT_GE(lines, 12);
  EXPECT_EQ(matched, lines);
}

TEST_P(ChatGoldens, RenderedTextEncodesToGoldenIds) {
  const Tokenizer tokenizer = Tokenizer::load(tokenizer_dir(GetParam()));
  const auto [lines, matched] =
      for_each_golden(GetParam(), [&](const std::string& rendered, const auto& j) {
        const auto ids = tokenizer.encode(rendered, false);
        const auto expected = j.at("ids").template get<std::vector<int32_t>>();
        EXPECT_EQ(ids, expected) << rendered;
        return ids == expected;
      });
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
