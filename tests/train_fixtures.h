// Small training sets made on the fly from ../shared text, for the train/resume/eval tests.
#pragma once
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "support/test_support.h"

namespace lora::test {

inline const char* kStoriesModel = "models/stories260K";
inline const char* kStoriesText = "datasets/cs336-fixtures/tinystories_sample.txt";

// The sentences of the TinyStories sample (about 70).
inline std::vector<std::string> story_sentences() {
  const std::string text = read_file(shared_dir() / kStoriesText);
  std::vector<std::string> out;
  std::string cur;
  const std::string close_quote = "\xE2\x80\x9D";  // a sentence may end inside quotes
  for (std::size_t i = 0; i < text.size(); ++i) {
    cur += text[i];
    if (text[i] != '.' && text[i] != '!' && text[i] != '?') continue;
    if (text.compare(i + 1, close_quote.size(), close_quote) == 0) {
      cur += close_quote;
      i += close_quote.size();
    } else if (i + 1 < text.size() && text[i + 1] == '"') {
      cur += text[++i];
    }
    auto b = cur.find_first_not_of(" \n\r\t");
    if (b != std::string::npos && cur.find("<|endoftext|>") == std::string::npos &&
        cur.size() - b >= 8)
      out.push_back(cur.substr(b));
    cur.clear();
  }
  return out;
}

// `lora train` (one thread) of the model folder from the data folder into the adapter folder,
// then `more` flags.
inline std::vector<std::string> model_train_args(const std::filesystem::path& model,
                                                 const std::filesystem::path& data,
                                                 const std::filesystem::path& out,
                                                 const std::vector<std::string>& more) {
  std::vector<std::string> args = {"--threads",    "1",      "train",       "--model",
                                   model.string(), "--data", data.string(), "--adapter-path",
                                   out.string()};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// `lora train` on stories260K (one thread) from the data folder into the adapter folder, then
// `more` flags.
inline std::vector<std::string> stories_train_args(const std::filesystem::path& data,
                                                   const std::filesystem::path& out,
                                                   const std::vector<std::string>& more) {
  return model_train_args(shared_dir() / kStoriesModel, data, out, more);
}

inline void write_jsonl(const std::filesystem::path& p, const std::vector<nlohmann::json>& rows) {
  std::ofstream f(p, std::ios::binary);
  for (const auto& r : rows) f << r.dump() << "\n";
}

// A text data folder: the first `n_train` sentences train, the next `n_valid` validate.
inline void make_story_data(const std::filesystem::path& dir, std::size_t n_train = 40,
                            std::size_t n_valid = 12) {
  std::filesystem::create_directories(dir);
  auto s = story_sentences();
  std::vector<nlohmann::json> train, valid;
  for (std::size_t i = 0; i < s.size() && i < n_train + n_valid; ++i)
    (i < n_train ? train : valid).push_back({{"text", s[i]}});
  write_jsonl(dir / "train.jsonl", train);
  write_jsonl(dir / "valid.jsonl", valid);
}

// The "loss" of each line of a metrics.jsonl with its type and step: the part that must repeat
// exactly (timings do not).
inline std::vector<std::string> logged_losses(const std::filesystem::path& metrics) {
  std::vector<std::string> out;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    out.push_back(j["type"].get<std::string>() + "@" + j["step"].dump() + "=" + j["loss"].dump());
  }
  return out;
}

// The losses a run logged in its metrics.jsonl for one record type ("train", "val"), in order.
inline std::vector<double> logged_losses(const std::filesystem::path& metrics,
                                         const std::string& type) {
  std::vector<double> losses;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == type) losses.push_back(j["loss"].get<double>());
  }
  return losses;
}

}  // namespace lora::test
