#include "data/tokenizer/tokenizer_postprocessors.h"

#include <map>
#include <sstream>
#include <stdexcept>

#include "data/tokenizer/tokenizer_json.h"

namespace lora::data {

namespace {
using nlohmann::json;

// The single-sequence template: the ids to put before and after the sequence.
class Template final : public PostProcessor {
 public:
  Template(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void process(Encoding& enc, bool add_special_tokens, bool with_offsets) const override {
    if (!add_special_tokens) return;
    enc.ids.insert(enc.ids.begin(), before_.begin(), before_.end());
    enc.ids.insert(enc.ids.end(), after_.begin(), after_.end());
    if (with_offsets) {
      enc.offsets.insert(enc.offsets.begin(), before_.size(), {0, 0});
      enc.offsets.insert(enc.offsets.end(), after_.size(), {0, 0});
    }
  }

 private:
  std::vector<int32_t> before_, after_;
};

// ByteLevel only trims offsets to leave out the spaces a token carries; ids are unchanged.
class NoIdChange final : public PostProcessor {
 public:
  void process(Encoding&, bool, bool) const override {}
};

class SequenceProcessor final : public PostProcessor {
 public:
  explicit SequenceProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void process(Encoding& enc, bool add_special_tokens, bool with_offsets) const override {
    for (const auto& p : parts_) p->process(enc, add_special_tokens, with_offsets);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

// "$A", "$A:0", "$0" name the sequence; anything else names a special token.
bool is_sequence_ref(const std::string& item) {
  std::string name = item.substr(0, item.find(':'));
  return name == "$A" || name == "$" || name == "$0" || name == "$B" || name == "$1";
}

std::unique_ptr<PostProcessor> make_template(
    const json& j, const std::string& where,
    const std::function<std::optional<int32_t>(const std::string&)>& token_id) {
  // The special_tokens table: name -> ids.
  std::map<std::string, std::vector<int32_t>> specials;
  if (auto it = j.find("special_tokens"); it != j.end() && !it->is_null()) {
    if (!it->is_object()) throw std::runtime_error(where + ".special_tokens: expected an object");
    for (auto s = it->begin(); s != it->end(); ++s) {
      std::string here = where + ".special_tokens[\"" + s.key() + "\"]";
      const json& ids = json_field::require(s.value(), "ids", here);
      if (!ids.is_array()) throw std::runtime_error(here + ": \"ids\" must be a list");
      std::vector<int32_t> v;
      for (const auto& id : ids) {
        if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > INT32_MAX)
          throw std::runtime_error(here + ": ids must be non-negative integers");
        v.push_back(static_cast<int32_t>(id.get<int64_t>()));
      }
      specials[s.key()] = std::move(v);
    }
  }
  auto special_ids = [&](const std::string& name) {
    if (auto it = specials.find(name); it != specials.end()) return it->second;
    if (auto id = token_id(name)) return std::vector<int32_t>{*id};
    throw std::runtime_error(where + ": template names special token \"" + name +
                             "\" that is neither in special_tokens nor in the vocab");
  };
  const json& single = json_field::require(j, "single", where);
  std::vector<int32_t> before, after;
  bool seen_sequence = false;
  auto add_item = [&](bool is_sequence, const std::string& special_name) {
    if (is_sequence) {
      if (seen_sequence) throw std::runtime_error(where + ".single: the sequence appears twice");
      seen_sequence = true;
      return;
    }
    auto ids = special_ids(special_name);
    auto& target = seen_sequence ? after : before;
    target.insert(target.end(), ids.begin(), ids.end());
  };
  if (single.is_string()) {  // "<s> $A </s>"
    std::istringstream words(single.get<std::string>());
    std::string word;
    while (words >> word) {
      if (is_sequence_ref(word))
        add_item(true, "");
      else
        add_item(false, word.substr(0, word.rfind(':') == std::string::npos ? word.size()
                                                                            : word.rfind(':')));
    }
  } else if (single.is_array()) {
    for (std::size_t i = 0; i < single.size(); ++i) {
      const json& item = single[i];
      std::string here = where + ".single[" + std::to_string(i) + "]";
      if (item.is_object() && item.contains("Sequence")) {
        add_item(true, "");
      } else if (item.is_object() && item.contains("SpecialToken")) {
        add_item(false, json_field::require_string(item["SpecialToken"], "id", here));
      } else if (item.is_string()) {
        if (is_sequence_ref(item.get<std::string>()))
          add_item(true, "");
        else
          add_item(false, item.get<std::string>());
      } else {
        throw std::runtime_error(here +
                                 ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      }
    }
  } else {
    throw std::runtime_error(where + ".single: expected a list or a string");
  }
  if (!seen_sequence) throw std::runtime_error(where + ".single: the template lacks $A");
  return std::make_unique<Template>(std::move(before), std::move(after));
}

// BertProcessing / RobertaProcessing: {"cls": [token, id], "sep": [token, id]}.
int32_t pair_id(const json& j, const char* key, const std::string& where) {
  const json& v = json_field::require(j, key, where);
  if (!v.is_array() || v.size() != 2 || !v[1].is_number_integer() || v[1].get<int64_t>() < 0)
    throw std::runtime_error(where + ": \"" + key + "\" must be [token, id]");
  return static_cast<int32_t>(v[1].get<int64_t>());
}
}  // namespace

std::unique_ptr<PostProcessor> make_post_processor(
    const json& j, const std::string& where,
    const std::function<std::optional<int32_t>(const std::string&)>& token_id) {
  if (j.is_null()) return nullptr;
  std::string type = json_field::type_of(j, where);
  if (type == "TemplateProcessing") return make_template(j, where, token_id);
  if (type == "ByteLevel") return std::make_unique<NoIdChange>();
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    return std::make_unique<Template>(std::vector<int32_t>{pair_id(j, "cls", where)},
                                      std::vector<int32_t>{pair_id(j, "sep", where)});
  }
  if (type == "Sequence") {
    auto parts = json_field::component_list<PostProcessor>(
        j, "processors", where, [&token_id](const json& item, const std::string& here, bool) {
          return make_post_processor(item, here, token_id);
        });
    return std::make_unique<SequenceProcessor>(std::move(parts));
  }
  throw std::runtime_error(where + ": unsupported post_processor type \"" + type + "\"");
}

}  // namespace lora::data
