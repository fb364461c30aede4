#include "trainer/serve/api_error.h"

namespace lora::serve {

nlohmann::json ApiError::error_body(int status, const std::string& message,
                                    const std::string& param, const std::string& code) {
  std::string type = "invalid_request_error";
  if (status == 401) type = "authentication_error";
  if (status == 404) type = "not_found_error";
  if (status == 429) type = "rate_limit_error";
  if (status >= 500) type = "server_error";
  nlohmann::json error = {{"message", message},
                          {"type", type},
                          {"param", param.empty() ? nlohmann::json() : nlohmann::json(param)},
                          {"code", code.empty() ? nlohmann::json() : nlohmann::json(code)}};
  return {{"error", error}};
}

}  // namespace lora::serve
