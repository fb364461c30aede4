// Training data: JSONL files of records in one of four formats, read as a stream and checked on
// every line. A bad line is an error that names file:line and what is wrong.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace lora::data {

enum class RecordFormat {
  text,               // {"text": ...}
  prompt_completion,  // {"prompt": ..., "completion": ...}
  chat,               // {"messages": [{"role": ..., "content": ...}, ...]}
  instruction,        // {"instruction": ..., "input": ..., "output": ...}
};
std::string_view record_format_name(RecordFormat f);

// One record, already reduced to what the encoder needs. Instruction records keep their three
// fields; the encoder decides how to lay them out.
struct Record {
  RecordFormat format = RecordFormat::text;
  std::size_t line = 0;                    // 1-based line in its file
  std::string text;                        // text
  std::string prompt, completion;          // prompt_completion
  std::string instruction, input, output;  // instruction
  nlohmann::ordered_json messages;         // chat: the array as given (extra keys kept)
};

struct ReadOptions {
  // A line longer than this is an error; the reader never holds more than this many bytes of one
  // line, so a huge line costs no memory.
  std::size_t max_line_bytes = 64u << 20;
};

// The format a JSON object is written in, or an error message saying why it is none of them.
// Exactly one format's keys may appear (extra unrelated keys are allowed).
std::optional<RecordFormat> detect_record_format(const nlohmann::json& obj, std::string* why);

// Reads every record of a JSONL file. Blank lines are skipped. All records must share one format.
// Errors (std::runtime_error) name "file:line" and the problem: invalid JSON or UTF-8, a
// non-object, missing or mistyped fields, a format different from the file's first record, a line
// over the cap, an empty file.
std::vector<Record> read_jsonl(const std::filesystem::path& path, const ReadOptions& options = {});

// One record of a JSONL file and where its line lies (bytes [offset, offset + bytes), without the
// newline or a leading BOM), so that it can be read again (parse_record_line).
struct JsonlLine {
  Record record;
  std::string_view text;  // the line's bytes, valid until the next read
  uint64_t offset = 0;
  uint64_t bytes = 0;
};

// read_jsonl one record at a time, with its checks and errors (an empty file is refused when
// next() reaches its end), holding one line at most.
class JsonlReader {
 public:
  explicit JsonlReader(const std::filesystem::path& path, const ReadOptions& options = {});
  ~JsonlReader();
  JsonlReader(const JsonlReader&) = delete;
  JsonlReader& operator=(const JsonlReader&) = delete;
  std::optional<JsonlLine> next();                                // nullopt at the end
  std::optional<RecordFormat> format() const { return format_; }  // the first record's

 private:
  struct State;
  std::string name_;
  ReadOptions options_;
  std::optional<RecordFormat> format_;
  std::unique_ptr<State> state_;
};

// The record on line `line_no` of `source` (its text as JsonlReader found it), which must be in
// `format`: a record read again later. Errors name source:line.
Record parse_record_line(std::string_view line, RecordFormat format, std::size_t line_no,
                         const std::string& source);

// The files of a data folder. `train` and `valid` must exist (valid is optional only when the
// caller says so); test is optional.
struct DataFiles {
  std::filesystem::path train, valid, test;  // empty when absent
  static DataFiles in_folder(const std::filesystem::path& dir, bool need_valid = true);
};

}  // namespace lora::data
