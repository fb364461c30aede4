// encode_with_offsets: every token maps back to the bytes of the original input it came from,
// through normalizers (NFC, SentencePiece's Prepend/Replace) and pre-tokenizers, so a character
// span (e.g. an assistant turn of a rendered chat) can be turned into the tokens that cover it.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <memory>

#include "data/tokenizer/tokenizer.h"
#include "tests/support/test_support.h"
#include "tests/tokenizer_test_support.h"

namespace {
using lora::data::Encoding;
using lora::data::Tokenizer;
using nlohmann::json;

std::vector<std::string> golden_texts(const std::string& name) {
  std::ifstream in(lora::test::shared_dir() / ("goldens/public/tokenizer/" + name + ".jsonl"));
  std::vector<std::string> texts;
  for (std::string line; std::getline(in, line);) texts.push_back(json::parse(line)["text"]);
  return texts;
}

// Tokens whose byte range overlaps [begin, end).
std::vector<int32_t> tokens_in(const Encoding& enc, std::size_t begin, std::size_t end) {
  std::vector<int32_t> ids;
  for (std::size_t i = 0; i < enc.ids.size(); ++i)
    if (enc.offsets[i].first < end && enc.offsets[i].second > begin) ids.push_back(enc.ids[i]);
  return ids;
}

std::string trim(std::string s) {
  auto b = s.find_first_not_of(' ');
  auto e = s.find_last_not_of(' ');
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

struct OffsetCase {
  const char* golden;
  const char* tokenizer;
};

class TokenizerOffsets : public ::testing::TestWithParam<OffsetCase> {};

// On the golden strings (all of Unicode's corners), offsets cover the input in order without
// gaps, from byte 0 to the end, and the ids are those of encode().
TEST_P(TokenizerOffsets, TileTheInput) {
  const auto& c = GetParam();
  LORA_REQUIRE_SHARED(std::string("goldens/public/tokenizer/") + c.golden + ".jsonl");
  LORA_REQUIRE_SHARED(c.tokenizer);
  const Tokenizer& tok = lora::test::shared_tokenizer(c.tokenizer);
  int checked = 0;
  for (const auto& text : golden_texts(c.golden)) {
    Encoding enc = tok.encode_with_offsets(text, false);
    ASSERT_EQ(enc.ids, tok.encode(text, false)) << json(text).dump();
    ASSERT_EQ(enc.offsets.size(), enc.ids.size());
    if (enc.ids.empty()) continue;
    EXPECT_EQ(enc.offsets.front().first, 0u) << json(text).dump();
    EXPECT_EQ(enc.offsets.back().second, text.size()) << json(text).dump();
    for (std::size_t i = 0; i < enc.offsets.size(); ++i) {
      auto [b, e] = enc.offsets[i];
      EXPECT_LE(b, e);
      EXPECT_LE(e, text.size());
      if (i > 0) {
        // No gap and no going back. A prepended "▁" shares the first character with it, so
        // SentencePiece tokens may overlap there.
        EXPECT_LE(b, enc.offsets[i - 1].second) << json(text).dump() << " token " << i;
        EXPECT_GE(b, enc.offsets[i - 1].first) << json(text).dump() << " token " << i;
        EXPECT_GE(e, enc.offsets[i - 1].second) << json(text).dump() << " token " << i;
      }
    }
    ++checked;
  }
  EXPECT_GT(checked, 100);
}

// The tokens that cover a plain ASCII word decode back to that word.
TEST_P(TokenizerOffsets, AsciiWordSpansDecodeToTheWord) {
  const auto& c = GetParam();
  LORA_REQUIRE_SHARED(c.tokenizer);
  const Tokenizer& tok = lora::test::shared_tokenizer(c.tokenizer);
  const std::string text =
      "The quick brown fox jumps over the lazy dog; tokenizers map spans back exactly.";
  Encoding enc = tok.encode_with_offsets(text, true);
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t b = text.find_first_not_of(" ;.", pos);
    if (b == std::string::npos) break;
    std::size_t e = text.find_first_of(" ;.", b);
    if (e == std::string::npos) e = text.size();
    std::string word = text.substr(b, e - b);
    EXPECT_EQ(trim(tok.decode(tokens_in(enc, b, e), true)), word);
    pos = e;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shared, TokenizerOffsets,
    ::testing::Values(OffsetCase{"llama3", "tokenizers/llama3"},
                      OffsetCase{"qwen3", "tokenizers/qwen3"},
                      OffsetCase{"smollm2-135m-instruct", "tokenizers/smollm2-135m"},
                      OffsetCase{"llama2-tinyllama-hf", "tokenizers/llama2-tinyllama"},
                      OffsetCase{"mistral-7b-v0.1", "tokenizers/mistral-7b-v0.1"}),
    [](const auto& info) { return lora::test::test_name(info.param.golden); });

// What the training data code does: find an assistant turn in a rendered chat by its characters
// and take the tokens inside it.
TEST(TokenizerOffsetsChat, AssistantTurnTokensDecodeToTheTurn) {
  LORA_REQUIRE_SHARED("tokenizers/qwen3");
  const Tokenizer& tok = lora::test::shared_tokenizer("tokenizers/qwen3");
  const std::string answer = "The answer is 42, naïvely — café.";
  const std::string chat =
      "<|im_start|>user\nWhat is it?<|im_end|>\n<|im_start|>assistant\n" + answer + "<|im_end|>\n";
  std::size_t b = chat.find(answer), e = b + answer.size();
  Encoding enc = tok.encode_with_offsets(chat, false);
  std::vector<int32_t> inside;
  for (std::size_t i = 0; i < enc.ids.size(); ++i) {
    auto [tb, te] = enc.offsets[i];
    bool overlaps = tb < e && te > b;
    if (overlaps) {
      EXPECT_TRUE(tb >= b && te <= e) << "token " << i << " straddles the turn boundary";
      inside.push_back(enc.ids[i]);
    }
  }
  EXPECT_EQ(tok.decode(inside), answer);
  EXPECT_EQ(tok.decode(enc.ids), chat);
}

// NFC composes "e" + U+0301 into one character: the token holding it points at both input
// characters.
TEST(TokenizerOffsetsChat, NfcCompositionMapsToBothInputCharacters) {
  LORA_REQUIRE_SHARED("tokenizers/qwen3");
  const Tokenizer& tok = lora::test::shared_tokenizer("tokenizers/qwen3");
  const std::string text = "Cafe\xCC\x81 au lait";  // "Cafe" + COMBINING ACUTE ACCENT
  Encoding enc = tok.encode_with_offsets(text, false);
  ASSERT_EQ(enc.ids, tok.encode("Caf\xC3\xA9 au lait", false));  // same ids as precomposed
  auto covering = tokens_in(enc, 3, 6);
  ASSERT_FALSE(covering.empty());
  bool found = false;
  for (std::size_t i = 0; i < enc.ids.size(); ++i)
    if (enc.offsets[i].first <= 3 && enc.offsets[i].second >= 6) found = true;
  EXPECT_TRUE(found) << "no token covers both bytes of e and the combining accent";
  EXPECT_EQ(enc.offsets.back().second, text.size());
}

// SentencePiece-style: "▁" is prepended and replaces spaces, yet offsets stay on the input.
TEST(TokenizerOffsetsChat, SentencePieceMetaspaceMapsToSpaces) {
  LORA_REQUIRE_SHARED("tokenizers/llama2-tinyllama");
  const Tokenizer& tok = lora::test::shared_tokenizer("tokenizers/llama2-tinyllama");
  const std::string text = "Hello world";
  Encoding enc = tok.encode_with_offsets(text, true);
  ASSERT_EQ(enc.ids.size(), 3u);  // <s> ▁Hello ▁world
  EXPECT_EQ(enc.offsets[0], (std::pair<std::size_t, std::size_t>{0, 0}));
  EXPECT_EQ(enc.offsets[1], (std::pair<std::size_t, std::size_t>{0, 5}));
  EXPECT_EQ(enc.offsets[2], (std::pair<std::size_t, std::size_t>{5, 11}));
}

}  // namespace
