// The body of POST /v1/completions and /v1/chat/completions, read and checked field by field:
// a field of the wrong type or out of range is a 400 naming it.
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "trainer/sampler.h"

namespace lora::serve {

struct ServeLimits {
  std::size_t max_body_bytes = 1 << 20;
  int64_t max_prompt_tokens = 4096;
  int64_t max_tokens = 1024;  // the most a request may ask for
};

// llama-server's per-request adapter choice: {"id": N, "scale": S}.
struct LoraChoice {
  int64_t id = 0;
  float scale = 1.0f;
};

struct CompletionRequest {
  bool chat = false;
  std::string model;
  std::string prompt;                                                 // completions
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();  // chat
  int64_t max_tokens = 16;
  SamplingOptions sampling;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::optional<float> adapter_scale;
  std::optional<std::vector<LoraChoice>> lora;
};

// Throws ApiError (400) for a body that is not a valid request.
CompletionRequest parse_completion_request(const nlohmann::json& body, bool chat,
                                           const ServeLimits& limits);

}  // namespace lora::serve
