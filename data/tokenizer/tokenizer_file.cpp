#include "data/tokenizer/tokenizer_file.h"

#include <cstdint>
#include <fstream>
#include <stdexcept>

namespace lora::data {

namespace {
using nlohmann::json;

// Far beyond any published tokenizer (the largest have about 260k tokens, 30 MB of JSON): a file
// past these is refused before it can take the memory and time its size would.
constexpr std::size_t kMaxTableEntries = std::size_t(1) << 21;
constexpr std::uintmax_t kMaxFileBytes = std::uintmax_t(1) << 30;

// Splits a merge written as "left right".
bool split_merge(const std::string& line, std::pair<std::string, std::string>& out) {
  std::size_t space = line.find(' ');
  if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) return false;
  out = {line.substr(0, space), line.substr(space + 1)};
  return true;
}

// SAX handler: a DOM builder that diverts model.vocab and model.merges into BpeTables.
class Reader {
 public:
  Reader(json& root, BpeTables& tables) : dom_(root, true), tables_(tables) {}

  bool null() { return divert_value("null") && (mode_ != Mode::None || dom_.null()); }
  bool boolean(bool v) {
    return divert_value("a boolean") && (mode_ != Mode::None || dom_.boolean(v));
  }
  bool number_integer(json::number_integer_t v) {
    if (mode_ == Mode::Vocab && depth_ == table_depth_) return add_vocab(v);
    return divert_value("a number") && (mode_ != Mode::None || dom_.number_integer(v));
  }
  bool number_unsigned(json::number_unsigned_t v) {
    if (mode_ == Mode::Vocab && depth_ == table_depth_)
      return add_vocab(
          v > static_cast<json::number_unsigned_t>(INT64_MAX) ? -1 : static_cast<int64_t>(v));
    return divert_value("a number") && (mode_ != Mode::None || dom_.number_unsigned(v));
  }
  bool number_float(json::number_float_t v, const std::string& s) {
    return divert_value("a number") && (mode_ != Mode::None || dom_.number_float(v, s));
  }
  bool string(std::string& s) {
    if (mode_ == Mode::Merges) {
      if (depth_ == table_depth_) {  // "left right"
        std::pair<std::string, std::string> merge;
        if (!split_merge(s, merge))
          return fail("model.merges[" + std::to_string(tables_.merges.size()) +
                      "]: expected \"left right\", got \"" + s + "\"");
        return add_merge(std::move(merge));
      }
      if (depth_ == table_depth_ + 1 && pair_size_ < 2) {  // ["left", "right"]
        (pair_size_++ == 0 ? pair_.first : pair_.second) = std::move(s);
        return true;
      }
      return fail("model.merges[" + std::to_string(tables_.merges.size()) +
                  "]: expected \"left right\" or [left, right]");
    }
    if (mode_ == Mode::Vocab) return divert_value("a string");
    return dom_.string(s);
  }
  bool binary(json::binary_t& b) { return mode_ == Mode::None && dom_.binary(b); }

  bool start_object(std::size_t n) {
    ++depth_;
    if (mode_ == Mode::None && at_table("vocab")) {
      mode_ = Mode::Vocab;
      table_depth_ = depth_;
      tables_.has_vocab = true;
      return true;
    }
    if (mode_ != Mode::None)
      return fail(std::string(mode_ == Mode::Vocab ? "model.vocab" : "model.merges") +
                  ": unexpected object");
    keys_.resize(depth_ + 1);
    keys_[depth_].clear();
    return dom_.start_object(n);
  }
  bool key(std::string& k) {
    if (mode_ == Mode::Vocab) {
      vocab_key_ = std::move(k);
      return true;
    }
    keys_[depth_] = k;
    return dom_.key(k);
  }
  bool end_object() {
    --depth_;
    if (mode_ == Mode::Vocab && depth_ + 1 == table_depth_) {
      mode_ = Mode::None;
      return true;
    }
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    ++depth_;
    if (mode_ == Mode::None && at_table("merges")) {
      mode_ = Mode::Merges;
      table_depth_ = depth_;
      return true;
    }
    if (mode_ == Mode::Merges && depth_ == table_depth_ + 1) {
      pair_size_ = 0;
      return true;
    }
    if (mode_ != Mode::None)
      return fail(std::string(mode_ == Mode::Vocab ? "model.vocab" : "model.merges") +
                  ": unexpected list");
    keys_.resize(depth_ + 1);
    keys_[depth_].clear();
    return dom_.start_array(n);
  }
  bool end_array() {
    --depth_;
    if (mode_ == Mode::Merges) {
      if (depth_ + 1 == table_depth_) {
        mode_ = Mode::None;
        return true;
      }
      if (pair_size_ != 2)
        return fail("model.merges[" + std::to_string(tables_.merges.size()) +
                    "]: expected [left, right]");
      const bool added = add_merge(std::move(pair_));
      pair_ = {};
      return added;
    }
    return dom_.end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t pos, const std::string& token, const Exception& e) {
    return dom_.parse_error(pos, token, e);
  }

  const std::string& error() const { return error_; }

 private:
  enum class Mode { None, Vocab, Merges };

  // The container about to open is model.<name> (model at the top level).
  bool at_table(const char* name) const {
    return depth_ == 3 && keys_.size() > 2 && keys_[1] == "model" && keys_[2] == name;
  }
  bool add_vocab(int64_t id) {
    if (id < 0 || id > INT32_MAX)
      return fail("model.vocab[\"" + vocab_key_ + "\"]: the id must be a non-negative integer");
    if (tables_.vocab.size() >= kMaxTableEntries)
      return fail("model.vocab: more than " + std::to_string(kMaxTableEntries) + " tokens");
    tables_.vocab.emplace_back(std::move(vocab_key_), id);
    return true;
  }
  bool add_merge(std::pair<std::string, std::string> merge) {
    if (tables_.merges.size() >= kMaxTableEntries)
      return fail("model.merges: more than " + std::to_string(kMaxTableEntries) + " merges");
    tables_.merges.push_back(std::move(merge));
    return true;
  }
  // Inside a diverted table only the expected kinds of value are allowed.
  bool divert_value(const char* what) {
    if (mode_ == Mode::Vocab)
      return fail("model.vocab[\"" + vocab_key_ + "\"]: expected an integer id, got " + what);
    if (mode_ == Mode::Merges)
      return fail("model.merges[" + std::to_string(tables_.merges.size()) + "]: unexpected " +
                  what);
    return true;
  }
  bool fail(std::string message) {
    if (error_.empty()) error_ = std::move(message);
    return false;
  }

  nlohmann::detail::json_sax_dom_parser<json> dom_;
  BpeTables& tables_;
  Mode mode_ = Mode::None;
  int depth_ = 0, table_depth_ = -1;
  std::vector<std::string> keys_{1};  // the last key seen at each depth
  std::string vocab_key_;
  std::pair<std::string, std::string> pair_;
  int pair_size_ = 0;
  std::string error_;
};
}  // namespace

TokenizerFile read_tokenizer_file(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary | std::ios::ate);
  if (!in) throw std::runtime_error("cannot read tokenizer file " + file.string());
  if (std::uintmax_t(in.tellg()) > kMaxFileBytes)
    throw std::runtime_error(file.string() + ": " + std::to_string(std::uintmax_t(in.tellg())) +
                             " bytes, more than the " + std::to_string(kMaxFileBytes) +
                             " a tokenizer file may have");
  std::string text(static_cast<std::size_t>(in.tellg()), '\0');
  in.seekg(0);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (!in) throw std::runtime_error("cannot read tokenizer file " + file.string());

  TokenizerFile out;
  Reader reader(out.rest, out.tables);
  bool ok = false;
  try {
    ok = json::sax_parse(text, &reader);
  } catch (const json::exception& e) {
    throw std::runtime_error(file.string() + ": invalid JSON: " + e.what());
  }
  if (!ok) {
    throw std::runtime_error(file.string() + ": " +
                             (reader.error().empty() ? "invalid JSON" : reader.error()));
  }
  return out;
}

BpeTables tables_from_json(const json& model, const std::string& where) {
  BpeTables t;
  if (auto it = model.find("vocab"); it != model.end() && !it->is_null()) {
    if (!it->is_object())
      throw std::runtime_error(where + ".vocab: expected an object of token -> id");
    t.has_vocab = true;
    t.vocab.reserve(it->size());
    for (auto v = it->begin(); v != it->end(); ++v) {
      if (!v.value().is_number_integer() || v.value().get<int64_t>() < 0 ||
          v.value().get<int64_t>() > INT32_MAX)
        throw std::runtime_error(where + ".vocab[\"" + v.key() +
                                 "\"]: the id must be a non-negative integer");
      t.vocab.emplace_back(v.key(), v.value().get<int64_t>());
    }
  }
  if (auto it = model.find("merges"); it != model.end() && !it->is_null()) {
    if (!it->is_array()) throw std::runtime_error(where + ".merges: expected a list");
    t.merges.reserve(it->size());
    for (std::size_t i = 0; i < it->size(); ++i) {
      const json& item = (*it)[i];
      std::string here = where + ".merges[" + std::to_string(i) + "]";
      std::pair<std::string, std::string> merge;
      if (item.is_string()) {
        if (!split_merge(item.get_ref<const std::string&>(), merge))
          throw std::runtime_error(here + ": expected \"left right\", got \"" +
                                   item.get<std::string>() + "\"");
      } else if (item.is_array() && item.size() == 2 && item[0].is_string() &&
                 item[1].is_string()) {
        merge = {item[0].get<std::string>(), item[1].get<std::string>()};
      } else {
        throw std::runtime_error(here + ": expected \"left right\" or [left, right]");
      }
      t.merges.push_back(std::move(merge));
    }
  }
  return t;
}

}  // namespace lora::data
