// GGUF tokenizer metadata, both ways: a Hugging Face tokenizer.json written as tokenizer.ggml.*
// (gpt2 byte-level BPE with llama.cpp's pre-tokenizer names, llama SentencePiece with scores)
// and read back into a tokenizer gives Hugging Face's ids on the shared goldens, special tokens
// and decoding included. What is read back is only what a GGUF file holds (tokens, token types,
// merges or scores, the pre-tokenizer's name, special ids, add_bos).
#include <gtest/gtest.h>

#include <fstream>

#include "tests/support/test_support.h"
#include "tests/tokenizer_test_support.h"
#include "trainer/gguf_tokenizer.h"
#include "trainer/gguf_tokenizer_write.h"

namespace lora {
namespace {

using json = nlohmann::json;

struct Case {
  const char* golden;  // goldens/public/tokenizer/<golden>.jsonl
  const char* folder;  // the tokenizer.json's folder
  const char* model;   // the tokenizer.ggml.model written
  const char* pre;     // the tokenizer.ggml.pre written
};

class GgufTokenizerRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(GgufTokenizerRoundTrip, HuggingFaceIdsFromTheMetadata) {
  const Case& c = GetParam();
  const std::string golden = std::string("goldens/public/tokenizer/") + c.golden + ".jsonl";
  LORA_REQUIRE_SHARED(golden);
  LORA_REQUIRE_SHARED(std::string(c.folder) + "/tokenizer.json");
  const auto dir = test::shared_dir() / c.folder;
  test::TempDir tmp("gguf-tokenizer");
  GgufWriter w;
  set_gguf_tokenizer_of_folder(w, dir, 0);
  w.write(tmp / "t.gguf");
  const GgufFile f = GgufFile::open(tmp / "t.gguf");
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), c.model);
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), c.pre);
  const data::Tokenizer tok = data::Tokenizer::from_json(gguf_tokenizer_json(f), "t.gguf");
  std::ifstream in(test::shared_dir() / golden);
  std::string line;
  int total = 0, ok = 0;
  while (std::getline(in, line)) {
    const json g = json::parse(line);
    const std::string text = g["text"];
    const auto ids = g["ids"].get<std::vector<int32_t>>();
    const bool same = tok.encode(text, false) == ids &&
                      tok.encode(text, true) == g["ids_with_special"].get<std::vector<int32_t>>() &&
                      tok.decode(ids, false) == g["decoded"].get<std::string>();
    EXPECT_TRUE(same) << "text: " << json(text).dump();
    ++total;
    ok += same;
  }
  EXPECT_GT(total, 100);
  EXPECT_EQ(ok, total);
}

INSTANTIATE_TEST_SUITE_P(
    Shared, GgufTokenizerRoundTrip,
    ::testing::Values(Case{"qwen3", "tokenizers/qwen3", "gpt2", "qwen2"},
                      Case{"llama3_1", "tokenizers/llama3_1", "gpt2", "llama-bpe"},
                      Case{"smollm2-135m-instruct", "tokenizers/smollm2-135m", "gpt2", "smollm"},
                      Case{"stories260K", "models/stories260K", "llama", "default"}),
    [](const auto& info) { return test::test_name(info.param.golden); });

// The metadata itself: token types, padding to the model's vocabulary, special ids, the template.
TEST(GgufTokenizerWrite, TypesPaddingSpecialIdsAndTemplate) {
  const json tokenizer = {
      {"model",
       {{"type", "BPE"},
        {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}},
        {"merges", json::array({"a b"})}}},
      {"added_tokens", json::array({json{{"id", 3}, {"content", "<s>"}, {"special", true}},
                                    json{{"id", 4}, {"content", "<tool>"}, {"special", false}}})},
      {"pre_tokenizer",
       {{"type", "ByteLevel"},
        {"add_prefix_space", false},
        {"trim_offsets", false},
        {"use_regex", true}}}};
  const json config = {
      {"bos_token", "<s>"}, {"eos_token", {{"content", "<s>"}}}, {"chat_template", "{{ x }}"}};
  test::TempDir tmp("gguf-tokenizer");
  GgufWriter w;
  set_gguf_tokenizer(w, tokenizer, config, 7, "t");
  w.write(tmp / "t.gguf");
  const GgufFile f = GgufFile::open(tmp / "t.gguf");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "gpt-2");
  EXPECT_EQ(f.find("tokenizer.ggml.tokens")->strings,
            (std::vector<std::string>{"a", "b", "ab", "<s>", "<tool>", "[PAD5]", "[PAD6]"}));
  EXPECT_EQ(f.find("tokenizer.ggml.token_type")->integers,
            (std::vector<int64_t>{1, 1, 1, 3, 4, 5, 5}));
  EXPECT_EQ(f.find("tokenizer.ggml.merges")->strings, (std::vector<std::string>{"a b"}));
  EXPECT_EQ(f.get_int("tokenizer.ggml.bos_token_id"), 3);
  EXPECT_EQ(f.get_int("tokenizer.ggml.eos_token_id"), 3);
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f.get_string("tokenizer.chat_template"), "{{ x }}");

  // A pre-tokenizer llama.cpp has no name for, and a model type GGUF does not hold.
  json other = tokenizer;
  other["pre_tokenizer"] = {{"type", "Whitespace"}};
  GgufWriter w2;
  EXPECT_THROW(set_gguf_tokenizer(w2, other, config, 0, "t"), std::runtime_error);
  other["model"]["type"] = "Unigram";
  EXPECT_THROW(set_gguf_tokenizer(w2, other, config, 0, "t"), std::runtime_error);
  // A GGUF file naming an unknown pre-tokenizer is refused naming it.
  GgufWriter w3;
  set_gguf_tokenizer(w3, tokenizer, config, 0, "t");
  w3.set_string("tokenizer.ggml.pre", "mystery");
  w3.write(tmp / "m.gguf");
  try {
    gguf_tokenizer_json(GgufFile::open(tmp / "m.gguf"));
    ADD_FAILURE() << "an unknown pre-tokenizer was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'mystery'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lora
