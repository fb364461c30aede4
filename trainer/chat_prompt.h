// The prompt for a conversation: the model's own chat template (tokenizer_config.json) with the
// assistant's turn opened, or, for a model without one (base models such as stories260K), a
// ChatML layout after the model's BOS, so chat works with every model.
#pragma once
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer/tokenizer.h"

namespace lora {

class ChatPrompt {
 public:
  static ChatPrompt load(const std::filesystem::path& model_dir);
  // `messages` is [{"role", "content"}...]; the text ends where the assistant's reply begins.
  std::string render(const nlohmann::ordered_json& messages) const;
  // Token ids of render(messages): special tokens in the text are parsed as such, none added.
  std::vector<int32_t> encode(const data::Tokenizer& tokenizer,
                              const nlohmann::ordered_json& messages) const;
  bool has_model_template() const { return has_model_template_; }
  // Text that ends an assistant turn besides the EOS token ("<|im_end|>" in the fallback layout).
  std::vector<std::string> stop_strings() const;

 private:
  ChatPrompt(data::TokenizerConfig config, data::ChatTemplate tmpl, bool has_model_template);
  data::TokenizerConfig config_;
  data::ChatTemplate template_;
  bool has_model_template_ = false;
};

}  // namespace lora
