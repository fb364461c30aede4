// OpenAI's response objects for completions and chat completions: whole, and as the chunks of a
// server-sent event stream ("data: {...}\n\n", ending with "data: [DONE]\n\n").
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace lora::serve {

struct ResponseHeader {
  bool chat = false;
  std::string id;  // "cmpl-N" or "chatcmpl-N"
  int64_t created = 0;
  std::string model;
};

struct Usage {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};

nlohmann::json usage_json(const Usage& usage);
// The whole answer of a request that did not stream.
nlohmann::json completion_json(const ResponseHeader& h, const std::string& text,
                               const std::string& finish_reason, const Usage& usage);
// One stream chunk: new text, the assistant role (chat's first chunk), or the finish reason.
nlohmann::json chunk_json(const ResponseHeader& h, const std::string& text,
                          const std::string& finish_reason = {}, bool with_role = false);
// The last chunk when stream_options.include_usage: no choices, the usage.
nlohmann::json usage_chunk_json(const ResponseHeader& h, const Usage& usage);
std::string sse_event(const nlohmann::json& data);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

}  // namespace lora::serve
