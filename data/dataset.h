// Training data: JSONL files of records in one of four formats, read as a stream and checked on
// every line. A bad line is an error that names file:line and what is wrong.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
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

// The files of a data folder. `train` and `valid` must exist (valid is optional only when the
// caller says so); test is optional.
struct DataFiles {
  std::filesystem::path train, valid, test;  // empty when absent
  static DataFiles in_folder(const std::filesystem::path& dir, bool need_valid = true);
};

}  // namespace lora::data
