#include "data/dataset_encode.h"

#include <algorithm>
#include <stdexcept>

namespace lora::data {

int64_t Example::num_trained() const {
  return std::count(trained.begin(), trained.end(), uint8_t(1));
}

RecordEncoder::RecordEncoder(const Tokenizer& tokenizer, const TokenizerConfig& config,
                             EncodeOptions options)
    : tokenizer_(tokenizer), config_(config), options_(std::move(options)) {
  if (options_.chat_format != "template" && options_.chat_format != "llama2")
    throw std::runtime_error("unknown chat format \"" + options_.chat_format +
                             "\" (expected template or llama2)");
  if (options_.chat_format == "template" && config_.chat_template)
    chat_template_ =
        ChatTemplate::parse(*config_.chat_template, "tokenizer_config.json chat_template");
  if (config_.eos_token) eos_id_ = tokenizer_.token_to_id(*config_.eos_token);
  for (int64_t id = 0; id < tokenizer_.vocab_size(); ++id)
    if (tokenizer_.is_special(int32_t(id)))
      if (auto t = tokenizer_.id_to_token(int32_t(id)); t && !t->empty())
        special_tokens_.push_back(*t);
}

bool RecordEncoder::renders_as_chat(const Record& r) const {
  if (r.format == RecordFormat::chat) return true;
  if (r.format == RecordFormat::text) return false;
  return chat_template_.has_value() || options_.chat_format == "llama2";
}

namespace {

// The prompt and completion of a prompt/completion or instruction record.
std::pair<std::string, std::string> prompt_and_completion(const Record& r) {
  if (r.format == RecordFormat::prompt_completion) return {r.prompt, r.completion};
  std::string prompt = r.instruction;
  if (!r.input.empty()) prompt += "\n\n" + r.input;
  return {prompt, r.output};
}

nlohmann::ordered_json as_chat(const std::string& prompt, const std::string& completion) {
  return nlohmann::ordered_json::array(
      {{{"role", "user"}, {"content", prompt}}, {{"role", "assistant"}, {"content", completion}}});
}

}  // namespace

std::vector<Segment> RecordEncoder::segments(const Record& r) const {
  if (r.format == RecordFormat::text) return coalesce({{r.text, true}});
  nlohmann::ordered_json messages;
  if (r.format == RecordFormat::chat) {
    messages = r.messages;
  } else {
    auto [prompt, completion] = prompt_and_completion(r);
    if (!renders_as_chat(r)) return coalesce({{prompt, false}, {completion, true}});
    messages = as_chat(prompt, completion);
  }
  if (options_.chat_format == "llama2") return llama2_chat_segments(messages);
  if (!chat_template_)
    throw std::runtime_error(
        "a \"messages\" record needs a chat template, and the model's tokenizer_config.json has "
        "none");
  return chat_template_segments(*chat_template_, config_, messages, options_.template_kwargs,
                                special_tokens_);
}

Example RecordEncoder::encode(const Record& r) const {
  const std::vector<Segment> parts = segments(r);
  std::string text;
  for (const auto& s : parts) text += s.text;
  // Byte-level loss flags, so a token is trained when any byte it covers is.
  std::vector<uint8_t> byte_trained(text.size(), 0);
  std::size_t at = 0;
  for (const auto& s : parts) {
    if (s.trained) std::fill_n(byte_trained.begin() + at, s.text.size(), uint8_t(1));
    at += s.text.size();
  }
  const bool text_has_bos =
      config_.bos_token && !config_.bos_token->empty() && text.starts_with(*config_.bos_token);
  Encoding enc = tokenizer_.encode_with_offsets(text, /*add_special_tokens=*/!text_has_bos);

  Example ex;
  ex.line = r.line;
  ex.ids = std::move(enc.ids);
  ex.trained.resize(ex.ids.size(), 0);
  for (std::size_t t = 0; t < ex.ids.size(); ++t) {
    auto [b, e] = enc.offsets[t];
    e = std::min(e, text.size());
    if (b < e) {
      ex.trained[t] = std::any_of(byte_trained.begin() + b, byte_trained.begin() + e,
                                  [](uint8_t f) { return f != 0; });
    } else if (t > 0) {
      ex.trained[t] = ex.trained[t - 1];  // a token the post-processor added follows its left side
    }
  }
  const bool plain = r.format == RecordFormat::text || !renders_as_chat(r);
  if (plain && eos_id_ && (ex.ids.empty() || ex.ids.back() != *eos_id_)) {
    ex.ids.push_back(*eos_id_);
    ex.trained.push_back(parts.empty() ? 1 : parts.back().trained);
  }
  if (!options_.mask_prompt) std::fill(ex.trained.begin(), ex.trained.end(), uint8_t(1));
  if (!ex.trained.empty()) ex.trained[0] = 0;  // nothing predicts the first token
  if (ex.ids.size() > options_.max_seq_length) {
    ex.ids.resize(options_.max_seq_length);
    ex.trained.resize(options_.max_seq_length);
    ex.truncated = true;
  }
  return ex;
}

Example encode_checked(const RecordEncoder& encoder, const Record& r, const std::string& source) {
  Example ex;
  try {
    ex = encoder.encode(r);
  } catch (const std::exception& e) {
    throw std::runtime_error(source + ":" + std::to_string(r.line) + ": " + e.what());
  }
  if (ex.ids.size() < 2)
    throw std::runtime_error(source + ":" + std::to_string(r.line) +
                             ": the record tokenizes to fewer than 2 tokens; nothing to learn");
  return ex;
}

EncodedSet encode_records(const RecordEncoder& encoder, const std::vector<Record>& records,
                          const std::string& source) {
  EncodedSet set;
  set.examples.reserve(records.size());
  for (const auto& r : records) {
    Example ex = encode_checked(encoder, r, source);
    set.truncated += ex.truncated;
    set.tokens += int64_t(ex.ids.size());
    set.trained_tokens += ex.num_trained();
    set.examples.push_back(std::move(ex));
  }
  return set;
}

}  // namespace lora::data
