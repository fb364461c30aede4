// A malformed-GGUF corpus through everything the trainer reads from a GGUF model (the container,
// every tensor, the model built from the metadata, the tokenizer and its config): every truncation
// of a small model file, bad counts, offsets, types, overlapping tensors, absurd strings, bad
// model and tokenizer metadata, and 400 seeded random corruptions. Each is a clear error naming
// the file (and the key or tensor where there is one), never a crash or a huge allocation.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>

#include "gguf_tiny_model.h"
#include "support/test_support.h"
#include "trainer/gguf_model.h"
#include "trainer/gguf_tokenizer.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// Everything a training run reads from a GGUF model file.
void load_everything(const fs::path& path) {
  const GgufFile f = GgufFile::open(path);
  for (const auto& t : f.tensors()) (void)f.read_f32(t.name);
  (void)load_gguf_model(path);
  (void)load_model_tokenizer(path);
  (void)load_model_tokenizer_config(path);
}

std::string write_bytes(const fs::path& path, const std::vector<std::byte>& b) {
  test::write_file(path, std::string(reinterpret_cast<const char*>(b.data()), b.size()));
  return path.string();
}

// The error loading `bytes` gives ("" when it loads).
std::string load_error(const TempDir& dir, const std::vector<std::byte>& bytes) {
  const auto path = dir / "bad.gguf";
  write_bytes(path, bytes);
  try {
    load_everything(path);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

std::size_t after(const std::vector<std::byte>& b, const std::string& text) {
  const std::size_t at = test::gguf_after(b, text);
  EXPECT_NE(at, b.size()) << text;
  return at;
}

using test::gguf_poke;

TEST(GgufMalformed, TheTinyModelsLoad) {
  TempDir dir("gguf-bad");
  for (const char* arch : {"llama", "qwen3"}) {
    const auto path = dir / (std::string(arch) + ".gguf");
    test::tiny_gguf_model(arch).write(path);
    const Model m = load_gguf_model(path);
    EXPECT_EQ(m.config.num_layers, 1);
    EXPECT_EQ(m.config.hidden_size, 8);
    EXPECT_EQ(m.config.vocab_size, 16);
    EXPECT_EQ(m.config.qk_norm, std::string(arch) == "qwen3");
    const auto tok = load_model_tokenizer(path);
    EXPECT_FALSE(tok.encode("ab abc").empty());
    EXPECT_TRUE(load_model_tokenizer_config(path).chat_template.has_value());
  }
}

// The fuzz seeds in fuzz/corpus/gguf/ are these models and a file of every tensor type;
// LORA_WRITE_FUZZ_SEEDS=1 rewrites them.
TEST(GgufMalformed, TheFuzzSeedsAreTheTinyModels) {
  const fs::path corpus = fs::path(LORA_SOURCE_DIR) / "fuzz/corpus/gguf";
  for (const char* name : {"llama", "qwen3", "every-type"}) {
    const auto seed = corpus / ("tiny-" + std::string(name) + ".gguf");
    const auto bytes = std::string(name) == "every-type" ? test::gguf_every_type().serialize()
                                                         : test::tiny_gguf_model(name).serialize();
    if (std::getenv("LORA_WRITE_FUZZ_SEEDS")) write_bytes(seed, bytes);
    ASSERT_TRUE(fs::exists(seed)) << seed;
    // Header, metadata and tensor infos to the byte; the tensor values only in size, since the
    // normal draws behind them may round differently from one build's code generation to another.
    const std::string want(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    const std::string got = test::read_file(seed);
    const auto header = static_cast<std::size_t>(GgufFile::open(seed).data_offset());
    EXPECT_EQ(got.size(), want.size()) << seed;
    EXPECT_EQ(got.substr(0, header), want.substr(0, header))
        << seed << " differs from the file the test writes (LORA_WRITE_FUZZ_SEEDS=1 rewrites it)";
  }
}

TEST(GgufMalformed, EveryTruncationIsAClearError) {
  TempDir dir("gguf-bad");
  const auto good = test::tiny_gguf_model().serialize();
  const auto whole = dir / "good.gguf";
  write_bytes(whole, good);
  load_everything(whole);
  const GgufFile f = GgufFile::open(whole);
  uint64_t end = 0;
  for (const auto& t : f.tensors()) end = std::max(end, f.data_offset() + t.offset + t.bytes);
  for (std::size_t len = 0; len < end; ++len) {
    const std::string err = load_error(dir, {good.begin(), good.begin() + static_cast<long>(len)});
    ASSERT_FALSE(err.empty()) << "truncated to " << len << " bytes loaded";
    ASSERT_EQ(err.rfind((dir / "bad.gguf").string(), 0), 0u) << len << ": " << err;
  }
}

struct Case {
  std::string what;
  std::function<void(GgufWriter&)> change;
  std::string want;  // in the error
};

TEST(GgufMalformed, BadModelAndTokenizerMetadataNameTheKey) {
  TempDir dir("gguf-bad");
  const std::vector<Case> cases = {
      {"architecture", [](GgufWriter& w) { w.set_string("general.architecture", "gpt9"); },
       "architecture 'gpt9' is not supported"},
      {"no blocks", [](GgufWriter& w) { w.set_u32("llama.block_count", 0); },
       "metadata 'llama.block_count'"},
      {"absurd hidden", [](GgufWriter& w) { w.set_u32("llama.embedding_length", 1000000000); },
       "beyond the"},
      {"absurd hidden key", [](GgufWriter& w) { w.set_u32("llama.embedding_length", 1000000000); },
       "metadata 'llama.embedding_length'"},
      {"absurd layers", [](GgufWriter& w) { w.set_u32("llama.block_count", 4000000000u); },
       "metadata 'llama.block_count'"},
      {"heads as text", [](GgufWriter& w) { w.set_string("llama.attention.head_count", "2"); },
       "metadata 'llama.attention.head_count' is string, expected an integer"},
      {"eps as text",
       [](GgufWriter& w) { w.set_string("llama.attention.layer_norm_rms_epsilon", "x"); },
       "metadata 'llama.attention.layer_norm_rms_epsilon' is string, expected a number"},
      {"shape", [](GgufWriter& w) { w.set_u32("llama.feed_forward_length", 32); },
       "tensor 'blk.0.ffn_gate.weight': expected shape"},
      {"tokenizer model", [](GgufWriter& w) { w.set_string("tokenizer.ggml.model", "bert"); },
       "tokenizer.ggml.model 'bert' is not supported"},
      {"scores", [](GgufWriter& w) { w.set_f32s("tokenizer.ggml.scores", std::vector<float>(3)); },
       "metadata 'tokenizer.ggml.scores' must hold one float per token"},
      {"token types",
       [](GgufWriter& w) { w.set_i32s("tokenizer.ggml.token_type", std::vector<int32_t>(40)); },
       "metadata 'tokenizer.ggml.token_type' must hold one integer per token"},
      {"tokens", [](GgufWriter& w) { w.set_f32s("tokenizer.ggml.tokens", std::vector<float>(16)); },
       "metadata 'tokenizer.ggml.tokens' is missing or not strings"},
      {"bos", [](GgufWriter& w) { w.set_u32("tokenizer.ggml.bos_token_id", 99); },
       "metadata 'tokenizer.ggml.bos_token_id' is missing or out of range"},
      {"add_bos", [](GgufWriter& w) { w.set_u32("tokenizer.ggml.add_bos_token", 1); },
       "metadata 'tokenizer.ggml.add_bos_token' is u32, expected a bool"},
      {"template", [](GgufWriter& w) { w.set_u32("tokenizer.chat_template", 1); },
       "metadata 'tokenizer.chat_template' is u32, expected a string"},
  };
  for (const auto& c : cases) {
    GgufWriter w = test::tiny_gguf_model();
    c.change(w);
    const std::string err = load_error(dir, w.serialize());
    EXPECT_EQ(err.rfind((dir / "bad.gguf").string(), 0), 0u) << c.what << ": " << err;
    EXPECT_NE(err.find(c.want), std::string::npos)
        << c.what << ": want \"" << c.want << "\", got \"" << err << "\"";
  }
}

TEST(GgufMalformed, BadCountsOffsetsTypesAndOverlapsNameTheField) {
  TempDir dir("gguf-bad");
  const auto good = test::tiny_gguf_model().serialize();
  auto expect_error = [&](const std::vector<std::byte>& b, const std::string& want) {
    const std::string err = load_error(dir, b);
    EXPECT_NE(err.find(want), std::string::npos)
        << "want \"" << want << "\", got \"" << err << "\"";
  };
  auto b = good;
  gguf_poke<uint64_t>(b, 8, uint64_t(1) << 62);
  expect_error(b, "tensor count 4611686018427387904 is more than the");
  b = good;
  gguf_poke<uint64_t>(b, 16, uint64_t(1) << 40);
  expect_error(b, "metadata count 1099511627776 is more than the");
  b = good;
  gguf_poke<uint64_t>(b, after(b, "tokenizer.ggml.tokens") + 8, uint64_t(1) << 61);
  expect_error(b, "metadata 'tokenizer.ggml.tokens' (array length) 2305843009213693952");
  b = good;  // the first token's length
  gguf_poke<uint64_t>(b, after(b, "tokenizer.ggml.tokens") + 16, uint64_t(1) << 62);
  expect_error(b, "metadata 'tokenizer.ggml.tokens': string length 4611686018427387904 runs past");
  const std::size_t q = after(good, "blk.0.attn_q.weight");  // n_dims, ne[2], type, offset
  b = good;
  gguf_poke<uint32_t>(b, q + 20, 1234);
  expect_error(b, "tensor 'blk.0.attn_q.weight': tensor type type 1234 (1234) is not supported");
  b = good;
  gguf_poke<uint32_t>(b, q + 20, static_cast<uint32_t>(GgmlType::Q4_K));
  expect_error(b, "tensor 'blk.0.attn_q.weight': row length 8 is not a multiple of the Q4_K");
  b = good;
  gguf_poke<uint64_t>(b, q + 24, uint64_t(1) << 50);
  expect_error(b, "tensor 'blk.0.attn_q.weight': bytes [1125899906842624, ");
  b = good;
  gguf_poke<uint64_t>(b, q + 24, 0);  // onto token_embd.weight
  expect_error(b, "overlaps");
  expect_error(b, "'blk.0.attn_q.weight'");
  b = good;  // renamed: the model misses it
  b[after(b, "blk.0.ffn_up.weight") - 1] = std::byte{'z'};
  expect_error(b, "tensor 'blk.0.ffn_up.weight' is missing");
  b = good;
  gguf_poke<uint64_t>(b, q + 4, 16);  // 16 x 8 rows: the next tensor's bytes
  expect_error(b, "overlaps");
  b = good;
  gguf_poke<uint64_t>(b, q + 4, uint64_t(1) << 35);
  expect_error(b, "tensor 'blk.0.attn_q.weight': dimension 0 = 34359738368 is absurdly large");
}

// A token of 200,000 bytes: the merges are built from the splits of every piece, which must cost
// the piece's length, not its square (4 * 10^10 bytes hashed).
TEST(GgufMalformed, AnAbsurdTokenStringIsBounded) {
  TempDir dir("gguf-bad");
  GgufWriter w = test::tiny_gguf_model();
  std::vector<std::string> tokens = {
      "<unk>", "<s>", "</s>", "\xe2\x96\x81",          "a", "b", "c", "d", "e", "f", "g", "h",
      "i",     "j",   "k",    std::string(200000, 'a')};
  w.set_strings("tokenizer.ggml.tokens", tokens);
  const auto path = dir / "long.gguf";
  w.write(path);
  const auto start = std::chrono::steady_clock::now();
  const auto tok = load_model_tokenizer(path);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_GE(tok.encode("abc").size(), 4u);  // BOS and the pieces
}

// Random byte corruptions (1 to 4 bytes, three in four within the header and metadata): each
// loads or gives an error naming the file; none crashes.
TEST(GgufMalformed, RandomCorruptionsGiveClearErrors) {
  TempDir dir("gguf-bad");
  const auto good = test::tiny_gguf_model().serialize();
  const GgufFile f = GgufFile::open(write_bytes(dir / "good.gguf", good));
  std::mt19937 rng(1313);
  int refused = 0;
  for (int trial = 0; trial < 400; ++trial) {
    auto b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      const std::size_t limit = rng() % 4 ? f.data_offset() : b.size();
      b[rng() % limit] = static_cast<std::byte>(rng() & 0xFF);
    }
    const std::string err = load_error(dir, b);
    if (err.empty()) continue;
    ++refused;
    ASSERT_EQ(err.rfind((dir / "bad.gguf").string(), 0), 0u) << "trial " << trial << ": " << err;
  }
  EXPECT_GT(refused, 100);
}

}  // namespace
}  // namespace lora
