#include "trainer/chat_prompt.h"

#include "trainer/gguf_tokenizer.h"

namespace lora {

namespace {

constexpr const char* kFallbackTemplate =
    "{{ bos_token if bos_token else '' }}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

}  // namespace

ChatPrompt::ChatPrompt(data::TokenizerConfig config, data::ChatTemplate tmpl,
                       bool has_model_template)
    : config_(std::move(config)),
      template_(std::move(tmpl)),
      has_model_template_(has_model_template) {}

ChatPrompt ChatPrompt::load(const std::filesystem::path& model_dir) {
  data::TokenizerConfig config = load_model_tokenizer_config(model_dir);
  if (config.chat_template) {
    auto tmpl = data::ChatTemplate::parse(*config.chat_template,
                                          (model_dir / "tokenizer_config.json").string());
    return ChatPrompt(std::move(config), std::move(tmpl), true);
  }
  auto tmpl = data::ChatTemplate::parse(kFallbackTemplate, "ChatML fallback");
  return ChatPrompt(std::move(config), std::move(tmpl), false);
}

std::string ChatPrompt::render(const nlohmann::ordered_json& messages) const {
  return data::render_chat(template_, config_, messages, /*add_generation_prompt=*/true);
}

std::vector<int32_t> ChatPrompt::encode(const data::Tokenizer& tokenizer,
                                        const nlohmann::ordered_json& messages) const {
  return tokenizer.encode(render(messages), /*add_special_tokens=*/false);
}

std::vector<std::string> ChatPrompt::stop_strings() const {
  if (has_model_template_) return {};
  return {"<|im_end|>", "<|im_start|>"};
}

}  // namespace lora
