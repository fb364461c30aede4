// Chat templates under the sandbox limits. An input that starts with '{' is a
// tokenizer_config.json (special tokens and the template), rendered with a fixed conversation;
// any other input is a template source, parsed and rendered with the default config.
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/chat_template.h"
#include "data/tokenizer/tokenizer.h"
#include "fuzz/fuzz_input.h"

namespace {

const nlohmann::ordered_json& conversation() {
  static const auto messages = nlohmann::ordered_json::parse(R"([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi <b>there</b>"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": ""}])");
  return messages;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  const auto text = lora::fuzz::as_text(data, size);
  try {
    lora::data::TokenizerConfig config;
    std::string source(text);
    if (!text.empty() && text.front() == '{') {
      lora::fuzz::write_input("tokenizer_config.json", text);
      config = lora::data::TokenizerConfig::load(lora::fuzz::scratch_dir());
      if (!config.chat_template) return 0;
      source = *config.chat_template;
    }
    const auto tmpl = lora::data::ChatTemplate::parse(source, "fuzz");
    lora::data::render_chat(tmpl, config, conversation(), true);
  } catch (const std::exception&) {
  }
  return 0;
}
