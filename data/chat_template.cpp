// Temporary stub: parsing and rendering land in the next commits.
#include "data/chat_template.h"

#include <stdexcept>

namespace lora::data {

struct ChatTemplate::Impl {
  std::string source;
};

ChatTemplate::ChatTemplate() : impl_(std::make_unique<Impl>()) {}
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;
ChatTemplate::~ChatTemplate() = default;

ChatTemplate ChatTemplate::parse(const std::string& source, const std::string&) {
  ChatTemplate t;
  t.impl_->source = source;
  return t;
}

std::string ChatTemplate::render(const nlohmann::ordered_json&) const {
  throw std::runtime_error("chat templates are not implemented yet");
}

}  // namespace lora::data
