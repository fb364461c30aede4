#include "trainer/serve/openai_response.h"

namespace lora::serve {

using nlohmann::json;

namespace {

json header_json(const ResponseHeader& h, const char* object) {
  return {{"id", h.id}, {"object", object}, {"created", h.created}, {"model", h.model}};
}

json finish_json(const std::string& finish_reason) {
  return finish_reason.empty() ? json() : json(finish_reason);
}

}  // namespace

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json completion_json(const ResponseHeader& h, const std::string& text,
                     const std::string& finish_reason, const Usage& usage) {
  json out = header_json(h, h.chat ? "chat.completion" : "text_completion");
  json choice = {{"index", 0}};
  if (h.chat)
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_json(finish_reason);
  out["choices"] = json::array({choice});
  out["usage"] = usage_json(usage);
  return out;
}

json chunk_json(const ResponseHeader& h, const std::string& text, const std::string& finish_reason,
                bool with_role) {
  json out = header_json(h, h.chat ? "chat.completion.chunk" : "text_completion");
  json choice = {{"index", 0}};
  if (h.chat) {
    json delta = json::object();
    if (with_role) delta["role"] = "assistant";
    if (!text.empty() || with_role) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  choice["logprobs"] = nullptr;
  choice["finish_reason"] = finish_json(finish_reason);
  out["choices"] = json::array({choice});
  return out;
}

json usage_chunk_json(const ResponseHeader& h, const Usage& usage) {
  json out = header_json(h, h.chat ? "chat.completion.chunk" : "text_completion");
  out["choices"] = json::array();
  out["usage"] = usage_json(usage);
  return out;
}

std::string sse_event(const json& data) {
  return "data: " + data.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n";
}

}  // namespace lora::serve
