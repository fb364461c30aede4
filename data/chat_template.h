// Chat templates: the Jinja subset that real Hugging Face chat templates use, rendered the way
// transformers' apply_chat_template does. Sandboxed: no I/O, bounded loops and recursion.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

namespace lora::data {

class ChatTemplate {
 public:
  // Parses once; syntax errors name the template line.
  static ChatTemplate parse(const std::string& source, const std::string& name = "chat_template");
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

  // `context` holds the variables: messages, add_generation_prompt, bos_token, eos_token, ... and
  // any extra keyword arguments (enable_thinking, ...). raise_exception() and render errors throw
  // std::runtime_error naming the template line.
  std::string render(const nlohmann::ordered_json& context) const;

 private:
  ChatTemplate();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lora::data
