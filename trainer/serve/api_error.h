// Errors the server answers with: an HTTP status and OpenAI's error object
// {"error": {"message", "type", "param", "code"}}.
#pragma once
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace lora::serve {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, const std::string& message, std::string param = {}, std::string code = {})
      : std::runtime_error(message),
        status_(status),
        param_(std::move(param)),
        code_(std::move(code)) {}
  int status() const { return status_; }
  nlohmann::json body() const { return error_body(status_, what(), param_, code_); }
  // The error object for `status`: its type follows OpenAI's names.
  static nlohmann::json error_body(int status, const std::string& message,
                                   const std::string& param = {}, const std::string& code = {});

 private:
  int status_;
  std::string param_, code_;
};

inline ApiError bad_request(const std::string& message, const std::string& param = {}) {
  return ApiError(400, message, param);
}

}  // namespace lora::serve
