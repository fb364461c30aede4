// Turning records into token ids and per-token loss flags.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/dataset.h"
#include "data/dataset_chat.h"
#include "data/tokenizer/tokenizer.h"

namespace lora::data {

// A tokenized record. trained[t] says whether token t is a loss target (predicted from the
// tokens before it); token 0 never is.
struct Example {
  std::vector<int32_t> ids;
  std::vector<uint8_t> trained;
  std::size_t line = 0;    // the record's line in its file
  bool truncated = false;  // cut to max_seq_length
  int64_t num_trained() const;
};

struct EncodeOptions {
  // Loss only on completions and assistant turns (else on every token).
  bool mask_prompt = false;
  // Longer examples are cut to this many tokens (and counted).
  std::size_t max_seq_length = 2048;
  // "template": the model's chat_template; "llama2": Llama-2 chat as FastChat/axolotl write it.
  std::string chat_format = "template";
  // Extra template variables (enable_thinking, ...).
  nlohmann::ordered_json template_kwargs = nlohmann::ordered_json::object();
};

class RecordEncoder {
 public:
  RecordEncoder(const Tokenizer& tokenizer, const TokenizerConfig& config, EncodeOptions options);

  // The text a record becomes, split into trained and untrained segments. Text records are one
  // trained segment. prompt/completion and instruction records are a user/assistant chat when the
  // model has a chat template, else prompt then completion concatenated.
  std::vector<Segment> segments(const Record& record) const;
  // Tokenizes the segments' text once and flags the tokens that overlap trained segments. BOS
  // comes from the tokenizer's post-processor unless the text already starts with it; EOS is
  // appended to text and plain prompt/completion records (as mlx-lm does), not to chats, whose
  // template writes its own end-of-turn.
  Example encode(const Record& record) const;

 private:
  bool renders_as_chat(const Record& record) const;
  const Tokenizer& tokenizer_;
  TokenizerConfig config_;
  EncodeOptions options_;
  std::optional<ChatTemplate> chat_template_;
  std::optional<int32_t> eos_id_;
  std::vector<std::string> special_tokens_;  // texts of the tokenizer's special tokens
};

// Encodes one record; errors name `source`:line, and a record needs at least 2 tokens.
Example encode_checked(const RecordEncoder& encoder, const Record& record,
                       const std::string& source);

// Encodes every record; errors name `source`:line.
struct EncodedSet {
  std::vector<Example> examples;
  int64_t truncated = 0;  // examples cut to max_seq_length
  int64_t tokens = 0;
  int64_t trained_tokens = 0;
};
EncodedSet encode_records(const RecordEncoder& encoder, const std::vector<Record>& records,
                          const std::string& source);

}  // namespace lora::data
