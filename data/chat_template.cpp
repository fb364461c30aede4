#include "data/chat_template.h"

#include <stdexcept>

#include "data/jinja/jinja_builtins.h"
#include "data/jinja/jinja_interpreter.h"
#include "data/jinja/jinja_lexer.h"
#include "data/jinja/jinja_parser.h"
#include "data/tokenizer/tokenizer.h"

namespace lora::data {

struct ChatTemplate::Impl {
  std::string name;
  std::string source;
  jinja::Program program;

  std::runtime_error located(const jinja::TemplateError& e) const {
    std::string where = name;
    if (e.pos) {
      const auto [line, column] = jinja::line_column(source, *e.pos);
      where += ":" + std::to_string(line) + ":" + std::to_string(column);
    }
    return std::runtime_error(where + ": " + e.what());
  }

  // Renders with the variables `fill` puts into the global scope (after the builtins).
  template <typename Fill>
  std::string run(Fill&& fill) const {
    try {
      jinja::Scope globals;
      jinja::install_globals(globals);
      fill(globals);
      jinja::Interpreter interpreter{jinja::Limits{}};
      return interpreter.render(program, globals);
    } catch (const jinja::TemplateError& e) {
      throw located(e);
    }
  }
};

ChatTemplate::ChatTemplate() : impl_(std::make_unique<Impl>()) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

const std::string& ChatTemplate::name() const { return impl_->name; }

ChatTemplate ChatTemplate::parse(const std::string& source, const std::string& name) {
  ChatTemplate t;
  t.impl_->name = name;
  t.impl_->source = source;
  try {
    t.impl_->program = jinja::parse_template(source);
  } catch (const jinja::TemplateError& e) {
    throw t.impl_->located(e);
  }
  return t;
}

std::string ChatTemplate::render(const nlohmann::ordered_json& context) const {
  if (!context.is_object())
    throw std::runtime_error(impl_->name + ": the render context must be a JSON object");
  return impl_->run([&](jinja::Scope& globals) {
    for (const auto& [key, value] : context.items()) globals.set(key, jinja::from_json(value));
  });
}

std::string render_chat(const ChatTemplate& chat_template, const TokenizerConfig& config,
                        const nlohmann::ordered_json& messages, bool add_generation_prompt,
                        const nlohmann::ordered_json& extra_kwargs) {
  if (!extra_kwargs.is_null() && !extra_kwargs.is_object())
    throw std::runtime_error(chat_template.name() +
                             ": template keyword arguments must be a JSON object");
  // The variables go straight into the template's scope (no JSON copy of the conversation).
  return chat_template.impl_->run([&](jinja::Scope& globals) {
    globals.set("messages", jinja::from_json(messages));
    globals.set("add_generation_prompt", jinja::Value::boolean(add_generation_prompt));
    globals.set("tools", jinja::Value::none());
    globals.set("documents", jinja::Value::none());
    const std::pair<const char*, const std::optional<std::string>*> tokens[] = {
        {"bos_token", &config.bos_token},  {"eos_token", &config.eos_token},
        {"unk_token", &config.unk_token},  {"sep_token", &config.sep_token},
        {"pad_token", &config.pad_token},  {"cls_token", &config.cls_token},
        {"mask_token", &config.mask_token}};
    for (const auto& [key, value] : tokens)  // unset or empty tokens stay undefined
      if (*value && !(*value)->empty()) globals.set(key, jinja::Value::string(**value));
    if (extra_kwargs.is_object())
      for (const auto& [key, value] : extra_kwargs.items())
        globals.set(key, jinja::from_json(value));
  });
}

}  // namespace lora::data
