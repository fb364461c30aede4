// Streamed JSONL splits (data/jsonl_stream.h): the same examples, summaries, fingerprints and
// batches in the same order as the in-memory path on the test datasets, the same errors for broken
// files, an error when the file changes under a run, and heap use that does not grow with the
// size of the records (a counting operator new in this test program).
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <new>

#include "data/jsonl_stream.h"
#include "support/heap_counter.h"
#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/evaluate.h"
#include "trainer/gguf_tokenizer.h"

namespace lora::data {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

std::shared_ptr<const RecordEncoder> stories_encoder(bool mask_prompt, std::size_t max_seq,
                                                     const std::string& chat_format = "template") {
  const fs::path model = test::shared_dir() / test::kStoriesModel;
  EncodeOptions o;
  o.mask_prompt = mask_prompt;
  o.max_seq_length = max_seq;
  o.chat_format = chat_format;
  return make_shared_encoder(load_model_tokenizer(model), load_model_tokenizer_config(model), o);
}

void expect_same_batch(const Batch& a, const Batch& b, const std::string& where) {
  EXPECT_EQ(a.batch, b.batch) << where;
  EXPECT_EQ(a.seq, b.seq) << where;
  EXPECT_EQ(a.inputs, b.inputs) << where;
  EXPECT_EQ(a.targets, b.targets) << where;
  EXPECT_EQ(a.weights, b.weights) << where;
  EXPECT_EQ(a.key_valid, b.key_valid) << where;
  EXPECT_EQ(a.trained_tokens, b.trained_tokens) << where;
}

// The in-memory path (read_jsonl + encode_records) and the streamed one on one file.
void expect_same_as_in_memory(const fs::path& file, const std::shared_ptr<const RecordEncoder>& enc,
                              int64_t batch_size) {
  const EncodedSet set = lora::load_split(file, *enc, 64u << 20);
  const auto streamed = lora::stream_split(file, enc, 64u << 20);
  const SplitSummary mem = summarize(set), str = streamed->summary();
  EXPECT_EQ(mem.examples, str.examples) << file;
  EXPECT_EQ(mem.truncated, str.truncated) << file;
  EXPECT_EQ(mem.tokens, str.tokens) << file;
  EXPECT_EQ(mem.trained_tokens, str.trained_tokens) << file;
  EXPECT_EQ(mem.longest, str.longest) << file;
  EXPECT_EQ(mem.fingerprint, str.fingerprint) << file;
  Example scratch;
  for (std::size_t i = 0; i < set.examples.size(); ++i) {
    const Example& e = streamed->get(i, scratch);
    ASSERT_EQ(e.ids, set.examples[i].ids) << file << " example " << i;
    ASSERT_EQ(e.trained, set.examples[i].trained) << file << " example " << i;
    ASSERT_EQ(e.line, set.examples[i].line) << file << " example " << i;
  }
  const BatchPlan a(set.examples, batch_size, 7), b(streamed, batch_size, 7);
  ASSERT_EQ(a.batches_per_epoch(), b.batches_per_epoch());
  DataCursor ca, cb;
  for (int64_t k = 0; k < 2 * a.batches_per_epoch(); ++k)
    expect_same_batch(a.next(ca), b.next(cb), file.string() + " batch " + std::to_string(k));
  EXPECT_EQ(ca, cb);
  for (int64_t part = 0; part < 2; ++part)  // a data-parallel rank's share
    expect_same_batch(a.group(0, part, 2), b.group(0, part, 2), file.string() + " part");
}

TEST(JsonlStream, SameExamplesAndBatchesAsInMemoryOnTheTestDatasets) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  LORA_REQUIRE_SHARED("datasets/mlx-examples-wikisql/valid.jsonl");
  LORA_REQUIRE_SHARED("datasets/mlx-examples-wwdc25/valid.jsonl");
  const fs::path sets = test::shared_dir() / "datasets";
  for (bool mask : {false, true})
    for (std::size_t max_seq : {48, 2048}) {
      const auto enc = stories_encoder(mask, max_seq);
      expect_same_as_in_memory(sets / "mlx-examples-wikisql/valid.jsonl", enc, 4);
      expect_same_as_in_memory(sets / "mlx-examples-wwdc25/valid.jsonl", enc, 3);
    }
  TempDir tmp("stream");  // chat records (Llama-2 layout), a BOM and blank lines
  std::string chat = "\xEF\xBB\xBF";
  for (int i = 0; i < 9; ++i)
    chat += "{\"messages\": [{\"role\": \"user\", \"content\": \"Tell me story " +
            std::to_string(i) + "\"}, {\"role\": \"assistant\", \"content\": \"Once upon a " +
            std::string(std::size_t(i), 'x') + " time.\"}]}\n" + (i % 3 ? "" : "\n  \n");
  test::write_file(tmp / "chat.jsonl", chat);
  expect_same_as_in_memory(tmp / "chat.jsonl", stories_encoder(true, 2048, "llama2"), 2);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

TEST(JsonlStream, BrokenFilesGiveTheInMemoryErrors) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  LORA_REQUIRE_SHARED("datasets/tinyllama-cli-qa/cli_qa.jsonl");
  TempDir tmp("stream");
  const auto enc = stories_encoder(false, 2048);
  const std::vector<std::pair<std::string, std::string>> files = {
      {"json.jsonl", "{\"text\": \"a b\"}\n{\"text\": \"c\"\n"},
      {"mixed.jsonl", "{\"text\": \"a b\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n"},
      {"empty.jsonl", "\n\n"},
      {"long.jsonl", "{\"text\": \"a b\"}\n{\"text\": \"" + std::string(300, 'z') + "\"}\n"}};
  for (const auto& [name, content] : files) test::write_file(tmp / name, content);
  std::vector<fs::path> paths = {test::shared_dir() / "datasets/tinyllama-cli-qa/cli_qa.jsonl",
                                 tmp / "missing.jsonl", tmp.path()};
  for (const auto& [name, content] : files) paths.push_back(tmp / name);
  for (const auto& p : paths) {
    const std::string mem = error_of([&] { lora::load_split(p, *enc, 256); });
    const std::string str = error_of([&] { lora::stream_split(p, enc, 256); });
    EXPECT_FALSE(mem.empty()) << p;
    EXPECT_EQ(mem, str) << p;
  }
}

TEST(JsonlStream, AFileChangedUnderTheRunIsAnError) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  TempDir tmp("stream");
  test::write_file(tmp / "t.jsonl", "{\"text\": \"one upon a time\"}\n{\"text\": \"the end\"}\n");
  const auto s = lora::stream_split(tmp / "t.jsonl", stories_encoder(false, 2048), 1 << 20);
  Example scratch;
  EXPECT_NO_THROW(s->get(1, scratch));
  test::write_file(tmp / "t.jsonl", "{\"text\": \"one upon a time\"}\n{\"text\": \"the cat\"}\n");
  EXPECT_NE(error_of([&] { s->get(1, scratch); }).find("t.jsonl:2: the line differs"),
            std::string::npos);
  test::write_file(tmp / "t.jsonl", "{\"text\": \"x\"}\n");
  EXPECT_NE(error_of([&] { s->get(1, scratch); }).find("t.jsonl:2: cannot read the record again"),
            std::string::npos);
}

// 1,000 records of about 4 KB (4 MB of text): reading them into memory takes more than the file;
// streaming them, and walking every batch of an epoch, takes under a megabyte beyond the index.
TEST(JsonlStream, HeapDoesNotGrowWithTheRecords) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  TempDir tmp("stream");
  const fs::path file = tmp / "big.jsonl";
  {
    std::ofstream out(file);
    std::string words;
    for (int w = 0; w < 800; ++w) words += w % 7 ? "cat " : "sat ";
    for (int r = 0; r < 1000; ++r) out << "{\"text\": \"" << r << ' ' << words << "\"}\n";
  }
  const auto file_bytes = int64_t(fs::file_size(file));
  const auto enc = stories_encoder(false, 256);
  auto peak_growth = [](const std::function<void()>& f) {
    const int64_t before = test::heap_counter::live_bytes();
    test::heap_counter::reset_peak();
    f();
    return test::heap_counter::peak_bytes() - before;
  };
  const int64_t in_memory = peak_growth([&] { (void)read_jsonl(file); });
  std::size_t index_bytes = 0;
  const int64_t streamed = peak_growth([&] {
    const auto s = lora::stream_split(file, enc, 1 << 20);
    index_bytes = s->index_bytes();
    const BatchPlan plan(s, 8, 3);
    DataCursor cursor;
    for (int64_t k = 0; k < plan.batches_per_epoch(); ++k) (void)plan.next(cursor);
  });
  EXPECT_GT(in_memory, file_bytes);
  // The index doubles while it grows, then shrinks to fit: twice its size at most, plus a line,
  // a batch and the tokenizer's work.
  EXPECT_LT(streamed, int64_t(2 * index_bytes) + (1 << 20))
      << "file " << file_bytes << " bytes, index " << index_bytes;
}

}  // namespace
}  // namespace lora::data
