// Chat templates: the Jinja subset that real Hugging Face chat templates use, rendered the way
// transformers.js' apply_chat_template does (with @huggingface/jinja's semantics, which the
// project's chat goldens come from). Sandboxed: no I/O, bounded loops, recursion and output.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

namespace lora::data {

struct TokenizerConfig;

class ChatTemplate {
 public:
  // Parses once; syntax errors name the template line and column ("name:line:col: what").
  static ChatTemplate parse(const std::string& source, const std::string& name = "chat_template");
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;
  ~ChatTemplate();

  // `context` (a JSON object) holds the variables: messages, add_generation_prompt, bos_token,
  // eos_token, ... and any extra keyword arguments (enable_thinking, ...). Object key order is
  // kept, as templates that iterate or tojson a dict show it. raise_exception() and render
  // errors throw std::runtime_error naming the template line. Rendering is deterministic
  // (strftime_now aside) and may be called from several threads at once.
  std::string render(const nlohmann::ordered_json& context) const;

  const std::string& name() const;

 private:
  friend std::string render_chat(const ChatTemplate&, const TokenizerConfig&,
                                 const nlohmann::ordered_json&, bool,
                                 const nlohmann::ordered_json&);
  ChatTemplate();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Renders a conversation with a model's own template, building the context exactly as
// transformers.js apply_chat_template does: messages, add_generation_prompt, tools=null,
// documents=null, the special tokens set in tokenizer_config.json (bos/eos/unk/sep/pad/cls/
// mask_token), then `extra_kwargs` (an object or null; its keys win).
std::string render_chat(
    const ChatTemplate& chat_template, const TokenizerConfig& config,
    const nlohmann::ordered_json& messages, bool add_generation_prompt,
    const nlohmann::ordered_json& extra_kwargs = nlohmann::ordered_json::object());

}  // namespace lora::data
