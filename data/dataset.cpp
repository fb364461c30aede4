#include "data/dataset.h"

#include <array>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace lora::data {

namespace fs = std::filesystem;

std::string_view record_format_name(RecordFormat f) {
  switch (f) {
    case RecordFormat::text:
      return "text";
    case RecordFormat::prompt_completion:
      return "prompt/completion";
    case RecordFormat::chat:
      return "messages (chat)";
    case RecordFormat::instruction:
      return "instruction/input/output";
  }
  return "?";
}

namespace {

const char* json_type_name(const nlohmann::json& j) { return j.type_name(); }

// A required string field: present and a string, else a message.
bool require_string(const nlohmann::json& obj, const char* key, std::string* why) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    *why = std::string("missing field \"") + key + "\"";
    return false;
  }
  if (!it->is_string()) {
    *why = std::string("field \"") + key + "\" must be a string, got " + json_type_name(*it);
    return false;
  }
  return true;
}

bool check_messages(const nlohmann::json& messages, std::string* why) {
  if (!messages.is_array()) {
    *why = std::string("field \"messages\" must be an array, got ") + json_type_name(messages);
    return false;
  }
  if (messages.empty()) {
    *why = "field \"messages\" is empty";
    return false;
  }
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const auto& m = messages[i];
    std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) {
      *why = where + " must be an object, got " + json_type_name(m);
      return false;
    }
    std::string inner;
    if (!require_string(m, "role", &inner) || !require_string(m, "content", &inner)) {
      *why = where + ": " + inner;
      return false;
    }
  }
  return true;
}

}  // namespace

std::optional<RecordFormat> detect_record_format(const nlohmann::json& obj, std::string* why) {
  if (!obj.is_object()) {
    *why = std::string("a record must be a JSON object, got ") + json_type_name(obj);
    return std::nullopt;
  }
  const bool has_text = obj.contains("text");
  const bool has_prompt = obj.contains("prompt") || obj.contains("completion");
  const bool has_chat = obj.contains("messages");
  const bool has_instruction = obj.contains("instruction") || obj.contains("output");
  const int formats = int(has_text) + int(has_prompt) + int(has_chat) + int(has_instruction);
  if (formats == 0) {
    *why =
        "no known record keys: expected \"text\", \"prompt\"+\"completion\", \"messages\", or "
        "\"instruction\"+\"input\"+\"output\"";
    return std::nullopt;
  }
  if (formats > 1) {
    *why = "keys of more than one record format in one record";
    return std::nullopt;
  }
  if (has_text) {
    if (!require_string(obj, "text", why)) return std::nullopt;
    return RecordFormat::text;
  }
  if (has_prompt) {
    if (!require_string(obj, "prompt", why) || !require_string(obj, "completion", why))
      return std::nullopt;
    return RecordFormat::prompt_completion;
  }
  if (has_chat) {
    if (!check_messages(obj["messages"], why)) return std::nullopt;
    return RecordFormat::chat;
  }
  if (!require_string(obj, "instruction", why) || !require_string(obj, "output", why))
    return std::nullopt;
  // "input" may be absent (Alpaca writes it empty); when present it must be a string.
  if (obj.contains("input") && !require_string(obj, "input", why)) return std::nullopt;
  return RecordFormat::instruction;
}

namespace {

Record make_record(RecordFormat format, nlohmann::ordered_json&& obj, std::size_t line) {
  Record r;
  r.format = format;
  r.line = line;
  switch (format) {
    case RecordFormat::text:
      r.text = obj["text"].get<std::string>();
      break;
    case RecordFormat::prompt_completion:
      r.prompt = obj["prompt"].get<std::string>();
      r.completion = obj["completion"].get<std::string>();
      break;
    case RecordFormat::chat:
      r.messages = std::move(obj["messages"]);
      break;
    case RecordFormat::instruction:
      r.instruction = obj["instruction"].get<std::string>();
      if (obj.contains("input")) r.input = obj["input"].get<std::string>();
      r.output = obj["output"].get<std::string>();
      break;
  }
  return r;
}

// Splits a stream into lines without ever holding more than `cap` bytes of one line.
class LineReader {
 public:
  LineReader(std::istream& in, std::size_t cap) : in_(in), cap_(cap) {}

  // Next line (without the newline) into `line`; false at end of stream. Throws LineTooLong.
  struct LineTooLong {};
  bool next(std::string& line) {
    line.clear();
    start_ = consumed_;
    bool any = false;
    while (true) {
      if (pos_ == len_) {
        in_.read(buffer_.data(), std::streamsize(buffer_.size()));
        len_ = std::size_t(in_.gcount());
        pos_ = 0;
        if (len_ == 0) return any;
      }
      any = true;
      const char* begin = buffer_.data() + pos_;
      const char* end = buffer_.data() + len_;
      const char* nl = static_cast<const char*>(std::memchr(begin, '\n', std::size_t(end - begin)));
      const std::size_t take = std::size_t((nl ? nl : end) - begin);
      if (line.size() + take > cap_) throw LineTooLong{};
      line.append(begin, take);
      pos_ += take;
      consumed_ += take;
      if (nl) {
        ++pos_;
        ++consumed_;
        return true;
      }
    }
  }

  // Where the line last returned starts in the stream.
  uint64_t start() const { return start_; }

 private:
  std::istream& in_;
  std::size_t cap_;
  std::array<char, 1 << 16> buffer_{};
  std::size_t pos_ = 0, len_ = 0;
  uint64_t consumed_ = 0, start_ = 0;
};

bool is_blank(const std::string& s) { return s.find_first_not_of(" \t\r") == std::string::npos; }

nlohmann::ordered_json parse_line(const std::string& where, std::string_view line) {
  try {
    return nlohmann::ordered_json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    // nlohmann reports invalid UTF-8 inside strings as a parse error too; its message says so.
    std::string msg = e.what();
    if (auto p = msg.find("parse error"); p != std::string::npos) msg = msg.substr(p);
    throw std::runtime_error(where + ": invalid JSON: " + msg);
  }
}

}  // namespace

struct JsonlReader::State {
  State(const fs::path& path, std::size_t cap) : in(path, std::ios::binary), lines(in, cap) {}
  std::ifstream in;
  LineReader lines;
  std::string line;
  std::size_t line_no = 0, first_line = 0, records = 0;
};

JsonlReader::JsonlReader(const fs::path& path, const ReadOptions& options)
    : name_(path.string()), options_(options) {
  if (!fs::exists(path)) throw std::runtime_error(name_ + ": file not found");
  if (fs::is_directory(path))
    throw std::runtime_error(name_ + ": is a folder, expected a .jsonl file");
  state_ = std::make_unique<State>(path, options.max_line_bytes);
  if (!state_->in) throw std::runtime_error(name_ + ": cannot open for reading");
}

JsonlReader::~JsonlReader() = default;

std::optional<JsonlLine> JsonlReader::next() {
  State& s = *state_;
  while (true) {
    const std::string where = name_ + ":" + std::to_string(++s.line_no);
    bool more = false;
    try {
      more = s.lines.next(s.line);
    } catch (const LineReader::LineTooLong&) {
      throw std::runtime_error(where + ": line is longer than " +
                               std::to_string(options_.max_line_bytes) +
                               " bytes (the max_line_bytes limit)");
    }
    if (!more) break;
    uint64_t offset = s.lines.start();
    if (s.line_no == 1 && s.line.starts_with("\xEF\xBB\xBF")) {  // UTF-8 BOM
      s.line.erase(0, 3);
      offset += 3;
    }
    if (is_blank(s.line)) continue;
    nlohmann::ordered_json obj = parse_line(where, s.line);
    std::string why;
    auto format = detect_record_format(obj, &why);
    if (!format) throw std::runtime_error(where + ": " + why);
    if (!format_) {
      format_ = format;
      s.first_line = s.line_no;
    } else if (*format != *format_) {
      throw std::runtime_error(
          where + ": record is in " + std::string(record_format_name(*format)) +
          " format but line " + std::to_string(s.first_line) + " is in " +
          std::string(record_format_name(*format_)) + " format (one format per file)");
    }
    ++s.records;
    return JsonlLine{make_record(*format, std::move(obj), s.line_no), s.line, offset,
                     s.line.size()};
  }
  if (s.in.bad()) throw std::runtime_error(name_ + ": read error");
  if (s.records == 0) throw std::runtime_error(name_ + ": no records (the file is empty)");
  return std::nullopt;
}

Record parse_record_line(std::string_view line, RecordFormat format, std::size_t line_no,
                         const std::string& source) {
  const std::string where = source + ":" + std::to_string(line_no);
  nlohmann::ordered_json obj = parse_line(where, line);
  std::string why;
  const auto found = detect_record_format(obj, &why);
  if (found != format)
    throw std::runtime_error(where + ": the record is not the one read before (" +
                             (found ? "another format" : why) + "); was the file changed?");
  return make_record(format, std::move(obj), line_no);
}

std::vector<Record> read_jsonl(const fs::path& path, const ReadOptions& options) {
  JsonlReader reader(path, options);
  std::vector<Record> records;
  while (auto line = reader.next()) records.push_back(std::move(line->record));
  return records;
}

DataFiles DataFiles::in_folder(const fs::path& dir, bool need_valid) {
  if (!fs::exists(dir)) throw std::runtime_error(dir.string() + ": data folder not found");
  if (!fs::is_directory(dir))
    throw std::runtime_error(dir.string() + ": the data path must be a folder holding train.jsonl");
  DataFiles files;
  auto pick = [&](const char* name) { return fs::exists(dir / name) ? dir / name : fs::path(); };
  files.train = pick("train.jsonl");
  files.valid = pick("valid.jsonl");
  files.test = pick("test.jsonl");
  if (files.train.empty())
    throw std::runtime_error((dir / "train.jsonl").string() + ": file not found (a data folder " +
                             "holds train.jsonl and valid.jsonl, optionally test.jsonl)");
  if (need_valid && files.valid.empty())
    throw std::runtime_error((dir / "valid.jsonl").string() +
                             ": file not found (needed for validation; with val_batches 0 a run "
                             "trains without it)");
  return files;
}

}  // namespace lora::data
