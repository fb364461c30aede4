// `lora serve`'s HTTP side: OpenAI's /v1/models, /v1/completions and /v1/chat/completions
// (streamed as server-sent events or not), vLLM's /v1/load_lora_adapter and
// /v1/unload_lora_adapter, and the chat page at /. Built on cpp-httplib.
#pragma once
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer/tokenizer.h"
#include "trainer/model.h"
#include "trainer/serve/completion_request.h"
#include "trainer/serve/scheduler.h"

namespace lora::serve {

struct ServeOptions {
  std::filesystem::path model_dir;
  std::string model_name;  // the base's name in /v1/models and in requests' "model"
  std::vector<std::pair<std::string, std::filesystem::path>> adapters;  // NAME, folder
  std::filesystem::path adapter_dir;  // run-time loads come only from here (empty: off)
  std::string api_key;                // empty: no key needed
  ServeLimits limits;
  SchedulerOptions scheduler;
  KVCacheType kv_cache = KVCacheType::F32;  // every request's
  GemvActivations decode_activations = GenerateOptions{}.decode_activations;
};

class Server {
 public:
  Server(const Model& model, ServeOptions options);
  ~Server();
  // Binds (port 0 picks a free one) and returns the port.
  int bind(const std::string& host, int port);
  void listen();  // serves until stop()
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lora::serve
