// JSONL reading: every record format, and clear file:line errors for broken input.
#include <gtest/gtest.h>

#include <fstream>

#include "data/dataset.h"
#include "support/test_support.h"

namespace lora::data {
namespace {

using test::TempDir;
using test::write_file;

// The error message read_jsonl gives for `content`, or "" when it reads fine.
std::string error_for(const std::string& content, ReadOptions options = {}) {
  TempDir dir("dataset");
  write_file(dir / "train.jsonl", content);
  try {
    read_jsonl(dir / "train.jsonl", options);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(Dataset, ReadsEveryRecordFormat) {
  TempDir dir("dataset");
  write_file(dir / "a.jsonl", "{\"text\": \"hello\"}\n\n{\"text\": \"world\"}\n");
  auto a = read_jsonl(dir / "a.jsonl");
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[0].format, RecordFormat::text);
  EXPECT_EQ(a[1].text, "world");
  EXPECT_EQ(a[1].line, 3u);  // blank line skipped, numbering kept

  write_file(dir / "b.jsonl", "{\"prompt\": \"p\", \"completion\": \"c\"}");  // no final newline
  auto b = read_jsonl(dir / "b.jsonl");
  ASSERT_EQ(b.size(), 1u);
  EXPECT_EQ(b[0].format, RecordFormat::prompt_completion);
  EXPECT_EQ(b[0].completion, "c");

  write_file(dir / "c.jsonl",
             "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": "
             "\"assistant\", \"content\": \"yo\", \"extra\": 1}]}\n");
  auto c = read_jsonl(dir / "c.jsonl");
  ASSERT_EQ(c[0].format, RecordFormat::chat);
  ASSERT_EQ(c[0].messages.size(), 2u);
  EXPECT_EQ(c[0].messages[1]["content"], "yo");

  write_file(dir / "d.jsonl",
             "{\"instruction\": \"i\", \"input\": \"\", \"output\": \"o\"}\n"
             "{\"instruction\": \"i2\", \"output\": \"o2\"}\n");
  auto d = read_jsonl(dir / "d.jsonl");
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[1].format, RecordFormat::instruction);
  EXPECT_EQ(d[1].instruction, "i2");
}

TEST(Dataset, BrokenLinesNameFileLineAndProblem) {
  struct Case {
    std::string content, expect_a, expect_b;
  };
  const std::vector<Case> cases = {
      {"{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n", "train.jsonl:2", "invalid JSON"},
      {"{\"text\": \"ok\"}\n[1, 2]\n", "train.jsonl:2", "must be a JSON object"},
      {"{\"prompt\": \"p\"}\n", "train.jsonl:1", "missing field \"completion\""},
      {"{\"text\": 5}\n", "train.jsonl:1", "\"text\" must be a string, got number"},
      {"{\"messages\": \"hi\"}\n", ":1", "\"messages\" must be an array"},
      {"{\"messages\": []}\n", ":1", "\"messages\" is empty"},
      {"{\"messages\": [{\"role\": \"user\"}]}\n", ":1", "messages[0]: missing field \"content\""},
      {"{\"messages\": [{\"role\": 1, \"content\": \"x\"}]}\n", ":1", "\"role\" must be a string"},
      {"{\"text\": \"a\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n", "train.jsonl:2",
       "but line 1 is in text format"},
      {"{\"text\": \"a\", \"prompt\": \"p\", \"completion\": \"c\"}\n", ":1", "more than one"},
      {"{\"foo\": 1}\n", ":1", "no known record keys"},
      {"", "train.jsonl", "no records"},
      {"\n  \n", "train.jsonl", "no records"},
      {"{\"text\": \"bad \xC3\x28 utf8\"}\n", "train.jsonl:1", "UTF-8"},
      {"{\"instruction\": \"i\", \"input\": 3, \"output\": \"o\"}\n", ":1",
       "\"input\" must be a string"},
  };
  for (const auto& c : cases) {
    std::string err = error_for(c.content);
    EXPECT_NE(err.find(c.expect_a), std::string::npos)
        << "content: " << c.content << "\nerror: " << err;
    EXPECT_NE(err.find(c.expect_b), std::string::npos)
        << "content: " << c.content << "\nerror: " << err;
  }
}

TEST(Dataset, HugeLineIsRefusedWithoutReadingItWhole) {
  // A sparse file: a short record, then a line of 1 GiB of NUL bytes that costs no disk. The
  // reader must stop at the cap instead of reading a gigabyte into memory.
  TempDir dir("dataset");
  auto path = dir / "train.jsonl";
  write_file(path, "{\"text\": \"fine\"}\n");
  std::filesystem::resize_file(path, (1ull << 30) + 17);
  ReadOptions options;
  options.max_line_bytes = 1 << 20;
  try {
    read_jsonl(path, options);
    FAIL() << "a 1 GiB line was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("train.jsonl:2: line is longer than 1048576 bytes"),
              std::string::npos)
        << e.what();
  }
}

TEST(Dataset, DataFolderNeedsTrainAndValid) {
  TempDir dir("dataset");
  EXPECT_THROW(DataFiles::in_folder(dir / "nope"), std::runtime_error);
  try {
    DataFiles::in_folder(dir.path());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("train.jsonl: file not found"), std::string::npos);
  }
  write_file(dir / "train.jsonl", "{\"text\": \"a\"}\n");
  try {
    DataFiles::in_folder(dir.path());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("valid.jsonl: file not found"), std::string::npos);
  }
  auto files = DataFiles::in_folder(dir.path(), /*need_valid=*/false);
  EXPECT_EQ(files.train, dir / "train.jsonl");
  EXPECT_TRUE(files.test.empty());
}

TEST(Dataset, SharedDatasetsReadCleanly) {
  LORA_REQUIRE_SHARED("datasets/mlx-examples-wikisql/train.jsonl");
  auto wikisql = read_jsonl(test::shared_dir() / "datasets/mlx-examples-wikisql/valid.jsonl");
  EXPECT_GT(wikisql.size(), 10u);
  EXPECT_EQ(wikisql[0].format, RecordFormat::text);
  auto wwdc = read_jsonl(test::shared_dir() / "datasets/mlx-examples-wwdc25/valid.jsonl");
  EXPECT_EQ(wwdc[0].format, RecordFormat::prompt_completion);
}

}  // namespace
}  // namespace lora::data
