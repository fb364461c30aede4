#include "trainer/serve/completion_request.h"

#include <random>

#include "trainer/serve/api_error.h"

namespace lora::serve {

namespace {

using nlohmann::json;

const json* field(const json& body, const char* name) {
  const auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

std::string get_string(const json& body, const char* name, bool required) {
  const json* v = field(body, name);
  if (!v) {
    if (required) throw bad_request(std::string("'") + name + "' is required", name);
    return {};
  }
  if (!v->is_string()) throw bad_request(std::string("'") + name + "' must be a string", name);
  return v->get<std::string>();
}

std::optional<double> get_number(const json& body, const char* name, double lo, double hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number()) throw bad_request(std::string("'") + name + "' must be a number", name);
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    throw bad_request(std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "], got " + v->dump(),
                      name);
  return x;
}

std::optional<int64_t> get_integer(const json& body, const char* name, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number_integer())
    throw bad_request(std::string("'") + name + "' must be an integer", name);
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    throw bad_request(std::string("'") + name + "' must be in [" + std::to_string(lo) + ", " +
                          std::to_string(hi) + "], got " + std::to_string(x),
                      name);
  return x;
}

bool get_bool(const json& body, const char* name) {
  const json* v = field(body, name);
  if (!v) return false;
  if (!v->is_boolean()) throw bad_request(std::string("'") + name + "' must be a boolean", name);
  return v->get<bool>();
}

// A string or an array of strings (OpenAI allows up to 4 stop sequences).
std::vector<std::string> get_stop(const json& body) {
  const json* v = field(body, "stop");
  if (!v) return {};
  if (v->is_string()) return {v->get<std::string>()};
  if (!v->is_array() || v->size() > 4)
    throw bad_request("'stop' must be a string or an array of up to 4 strings", "stop");
  std::vector<std::string> out;
  for (const auto& s : *v) {
    if (!s.is_string()) throw bad_request("'stop' must hold strings", "stop");
    out.push_back(s.get<std::string>());
  }
  return out;
}

nlohmann::ordered_json get_messages(const json& body) {
  const json* v = field(body, "messages");
  if (!v || !v->is_array() || v->empty())
    throw bad_request("'messages' must be a non-empty array", "messages");
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& m : *v) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw bad_request("each message needs a string 'role'", "messages");
    const json* content = field(m, "content");
    std::string text;
    if (content && content->is_string()) {
      text = content->get<std::string>();
    } else if (content && content->is_array()) {  // [{"type": "text", "text": ...}]
      for (const auto& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          throw bad_request("only text content parts are supported", "messages");
        text += part["text"].get<std::string>();
      }
    } else if (content) {
      throw bad_request("a message's 'content' must be a string or text parts", "messages");
    }
    out.push_back({{"role", m["role"].get<std::string>()}, {"content", text}});
  }
  return out;
}

std::string get_prompt(const json& body) {
  const json* v = field(body, "prompt");
  if (v && v->is_string()) return v->get<std::string>();
  if (v && v->is_array() && v->size() == 1 && (*v)[0].is_string())
    return (*v)[0].get<std::string>();
  throw bad_request("'prompt' must be a string (or an array of one string)", "prompt");
}

std::optional<std::vector<LoraChoice>> get_lora(const json& body) {
  const json* v = field(body, "lora");
  if (!v) return std::nullopt;
  if (!v->is_array()) throw bad_request("'lora' must be an array of {id, scale}", "lora");
  std::vector<LoraChoice> out;
  for (const auto& item : *v) {
    if (!item.is_object()) throw bad_request("'lora' must be an array of {id, scale}", "lora");
    LoraChoice c;
    c.id = get_integer(item, "id", 0, INT32_MAX).value_or(-1);
    if (c.id < 0) throw bad_request("each 'lora' entry needs an integer 'id'", "lora");
    c.scale = static_cast<float>(get_number(item, "scale", -100, 100).value_or(1.0));
    out.push_back(c);
  }
  return out;
}

}  // namespace

CompletionRequest parse_completion_request(const json& body, bool chat, const ServeLimits& limits) {
  if (!body.is_object()) throw bad_request("the request body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  r.model = get_string(body, "model", /*required=*/true);
  if (chat)
    r.messages = get_messages(body);
  else
    r.prompt = get_prompt(body);
  // OpenAI's defaults: 16 tokens for completions, as many as fit for chat.
  const auto max_tokens =
      chat ? get_integer(body, "max_completion_tokens", 0, limits.max_tokens) : std::nullopt;
  r.max_tokens = max_tokens ? *max_tokens
                            : get_integer(body, "max_tokens", 0, limits.max_tokens)
                                  .value_or(chat ? limits.max_tokens : 16);
  r.sampling.temperature = static_cast<float>(get_number(body, "temperature", 0, 2).value_or(1));
  r.sampling.top_p = static_cast<float>(get_number(body, "top_p", 1e-6, 1).value_or(1));
  r.sampling.top_k = get_integer(body, "top_k", 0, INT32_MAX).value_or(0);
  r.sampling.min_p = static_cast<float>(get_number(body, "min_p", 0, 1).value_or(0));
  r.sampling.repetition_penalty =
      static_cast<float>(get_number(body, "repetition_penalty", 1e-3, 100).value_or(1));
  const auto seed = get_integer(body, "seed", INT64_MIN, INT64_MAX);
  r.sampling.seed = seed ? static_cast<uint64_t>(*seed) : std::random_device{}();
  r.stop = get_stop(body);
  r.stream = get_bool(body, "stream");
  if (const json* opts = field(body, "stream_options")) {
    if (!opts->is_object())
      throw bad_request("'stream_options' must be an object", "stream_options");
    r.include_usage = get_bool(*opts, "include_usage");
  }
  if (const auto scale = get_number(body, "adapter_scale", -100, 100))
    r.adapter_scale = static_cast<float>(*scale);
  r.lora = get_lora(body);
  return r;
}

}  // namespace lora::serve
