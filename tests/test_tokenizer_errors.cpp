// Malformed tokenizer.json files and bad input: clear errors that name the component or field,
// never a crash (this suite also runs under ASan/UBSan). Also the added-token rules (lstrip,
// rstrip, single_word) on a small tokenizer whose results follow from HF's documented rules.
#include <gtest/gtest.h>

#include <random>

#include "data/tokenizer/tokenizer.h"
#include "tests/support/test_support.h"

namespace {
using lora::data::Tokenizer;
using nlohmann::json;

// A tiny character-level BPE: a, b, space, "ab" (one merge) and <unk>.
json tiny() {
  return json::parse(R"({
    "version": "1.0",
    "added_tokens": [
      {"id": 5, "content": "<m>", "special": true, "lstrip": false, "rstrip": false,
       "single_word": false, "normalized": false}
    ],
    "normalizer": null,
    "pre_tokenizer": {"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated",
                      "invert": false},
    "post_processor": null,
    "decoder": {"type": "Fuse"},
    "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": false,
              "vocab": {"a": 0, "b": 1, " ": 2, "ab": 3, "<unk>": 4},
              "merges": ["a b"]}
  })");
}

// Loads `j` both from a file (the streaming reader) and from the JSON tree; both must fail with
// a message that contains every one of `needles`.
void expect_load_error(const json& j, std::initializer_list<const char*> needles) {
  lora::test::TempDir tmp("tok-err");
  lora::test::write_file(tmp / "tokenizer.json", j.dump());
  for (int from_file = 0; from_file < 2; ++from_file) {
    try {
      if (from_file)
        Tokenizer::load(tmp.path());
      else
        Tokenizer::from_json(j);
      ADD_FAILURE() << "no error for " << j.dump().substr(0, 300);
    } catch (const std::runtime_error& e) {
      for (const char* n : needles)
        EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
            << (from_file ? "load: " : "from_json: ") << e.what() << "\n  lacks: " << n;
    }
  }
}

TEST(TokenizerErrors, TinyTokenizerWorks) {
  Tokenizer tok = Tokenizer::from_json(tiny());
  EXPECT_EQ(tok.encode("ab ba"), (std::vector<int32_t>{3, 2, 1, 0}));
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{3, 4}));  // c is unknown
  EXPECT_EQ(tok.encode("a<m>b"), (std::vector<int32_t>{0, 5, 1}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{3, 2, 5}), "ab <m>");
  EXPECT_EQ(tok.decode(std::vector<int32_t>{3, 2, 5}, true), "ab ");
  EXPECT_EQ(tok.vocab_size(), 6);
  EXPECT_TRUE(tok.is_special(5));
  EXPECT_EQ(tok.token_to_id("<m>"), 5);
  EXPECT_EQ(tok.id_to_token(3), "ab");
}

TEST(TokenizerErrors, UnsupportedComponentsAreNamed) {
  auto with = [](const char* key, json value) {
    json j = tiny();
    j[key] = std::move(value);
    return j;
  };
  expect_load_error(with("normalizer", {{"type", "BertNormalizer"}}),
                    {"normalizer", "BertNormalizer"});
  expect_load_error(with("normalizer", {{"type", "Precompiled"}}), {"Precompiled"});
  expect_load_error(with("pre_tokenizer", {{"type", "UnicodeScripts"}}),
                    {"pre_tokenizer", "UnicodeScripts"});
  expect_load_error(with("decoder", {{"type", "WordPiece"}}), {"decoder", "WordPiece"});
  expect_load_error(with("post_processor", {{"type", "Mystery"}}), {"post_processor", "Mystery"});
  for (const char* model : {"WordPiece", "Unigram", "WordLevel"}) {
    json j = tiny();
    j["model"]["type"] = model;
    expect_load_error(j, {"model", model});
  }
  json j = tiny();
  j["model"]["dropout"] = 0.1;
  expect_load_error(j, {"dropout"});
  j = tiny();
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers", {{{"type", "NFC"}}, {{"type", "Nope"}}}}};
  expect_load_error(j, {"normalizer.normalizers[1]", "Nope"});
}

TEST(TokenizerErrors, MalformedFieldsAreNamed) {
  json j = tiny();
  j["model"]["merges"] = {"a zz"};
  expect_load_error(j, {"merges[0]", "zz"});
  j = tiny();
  j["model"]["merges"] = {"a b c"};
  expect_load_error(j, {"merges[0]"});
  j = tiny();
  j["model"]["merges"] = {json::array({"a"})};
  expect_load_error(j, {"merges[0]"});
  j = tiny();
  j["model"]["vocab"]["a"] = -1;
  expect_load_error(j, {"vocab", "\"a\""});
  j = tiny();
  j["model"]["vocab"]["a"] = "zero";
  expect_load_error(j, {"vocab", "\"a\""});
  j = tiny();
  j["model"]["vocab"] = json::array();
  expect_load_error(j, {"vocab"});
  j = tiny();
  j["model"].erase("vocab");
  expect_load_error(j, {"vocab"});
  j = tiny();
  j["model"]["unk_token"] = "<nope>";
  expect_load_error(j, {"unk_token", "<nope>"});
  j = tiny();
  j.erase("model");
  expect_load_error(j, {"model"});
  j = tiny();
  j["added_tokens"] = "x";
  expect_load_error(j, {"added_tokens"});
  j = tiny();
  j["added_tokens"][0].erase("content");
  expect_load_error(j, {"added_tokens[0]", "content"});
  j = tiny();
  j["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_load_error(j, {"pre_tokenizer", "regex", "(unclosed"});
  j = tiny();
  j["pre_tokenizer"]["behavior"] = "Sideways";
  expect_load_error(j, {"pre_tokenizer", "Sideways"});
  j = tiny();
  j["post_processor"] = json::parse(
      R"({"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}},
          {"Sequence": {"id": "A", "type_id": 0}}], "special_tokens": {}})");
  expect_load_error(j, {"post_processor", "<bos>"});
  j = tiny();
  j["decoder"] = {{"type", "Strip"}, {"content", "ab"}, {"start", 1}, {"stop", 0}};
  expect_load_error(j, {"decoder", "content"});
  expect_load_error(json::array(), {"JSON object"});
}

TEST(TokenizerErrors, BrokenFilesNeverCrash) {
  lora::test::TempDir tmp("tok-broken");
  const std::string good = tiny().dump(1);
  // Every prefix of the file (cut mid-token, mid-string, mid-table) and random byte flips:
  // each either loads or throws std::runtime_error.
  std::vector<std::string> variants;
  for (std::size_t n = 0; n < good.size(); n += 3) variants.push_back(good.substr(0, n));
  std::mt19937 rng(1234);
  for (int i = 0; i < 300; ++i) {
    std::string s = good;
    for (int k = 0; k < 3; ++k) s[rng() % s.size()] = static_cast<char>(rng() % 256);
    variants.push_back(s);
  }
  variants.push_back("\xEF\xBB\xBF{}");
  variants.push_back("{\"model\": {\"vocab\": {\"\xFF\": 0}}}");
  int failed = 0;
  for (const auto& v : variants) {
    lora::test::write_file(tmp / "tokenizer.json", v);
    try {
      Tokenizer tok = Tokenizer::load(tmp / "tokenizer.json");
      (void)tok.encode("ab ba abc");
    } catch (const std::runtime_error& e) {
      ++failed;
      EXPECT_NE(std::string(e.what()).find("tokenizer.json"), std::string::npos) << e.what();
    }
  }
  EXPECT_GT(failed, static_cast<int>(variants.size() / 2));
  EXPECT_THROW(Tokenizer::load(tmp / "missing.json"), std::runtime_error);
}

TEST(TokenizerErrors, BadInputIsAClearError) {
  Tokenizer tok = Tokenizer::from_json(tiny());
  try {
    tok.encode("ab\xC3(");
    ADD_FAILURE() << "invalid UTF-8 accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("invalid UTF-8 at byte 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok.encode("\xED\xA0\x80"), std::runtime_error);  // a UTF-16 surrogate
  EXPECT_THROW(tok.encode("\xC0\xAF"), std::runtime_error);      // overlong
  EXPECT_THROW(tok.decode(std::vector<int32_t>{0, 99}), std::runtime_error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), std::runtime_error);
}

// HF's rules: lstrip takes the whitespace on the left into the token, rstrip that on the right;
// single_word matches only where no word character touches either side.
TEST(TokenizerAddedTokens, StripAndSingleWordRules) {
  json j = tiny();
  j["added_tokens"].push_back({{"id", 6},
                               {"content", "<l>"},
                               {"special", false},
                               {"lstrip", true},
                               {"rstrip", false},
                               {"single_word", false},
                               {"normalized", false}});
  j["added_tokens"].push_back({{"id", 7},
                               {"content", "<r>"},
                               {"special", false},
                               {"lstrip", false},
                               {"rstrip", true},
                               {"single_word", false},
                               {"normalized", false}});
  j["added_tokens"].push_back({{"id", 8},
                               {"content", "ba"},
                               {"special", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"single_word", true},
                               {"normalized", false}});
  Tokenizer tok = Tokenizer::from_json(j);
  EXPECT_EQ(tok.encode("a  <l>b"), (std::vector<int32_t>{0, 6, 1}));
  EXPECT_EQ(tok.encode("a<r>  b"), (std::vector<int32_t>{0, 7, 1}));
  EXPECT_EQ(tok.encode("a ba b"), (std::vector<int32_t>{0, 2, 8, 2, 1}));
  EXPECT_EQ(tok.encode("aba"), (std::vector<int32_t>{3, 0}));  // "ba" inside a word: no match
  auto enc = tok.encode_with_offsets("a  <l>b");
  ASSERT_EQ(enc.offsets.size(), 3u);
  EXPECT_EQ(enc.offsets[1], (std::pair<std::size_t, std::size_t>{1, 6}));
}

}  // namespace
