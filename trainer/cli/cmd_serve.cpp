// `lora serve`: an OpenAI-compatible HTTP server over a base model and its adapters.
#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <thread>

#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"
#include "trainer/serve/server.h"

namespace lora::cli {

namespace {

struct ServeFlags {
  std::string model;
  std::string model_name;
  std::vector<std::string> adapter_paths;  // NAME=DIR
  std::string adapter_dir;
  std::string host = "127.0.0.1";
  int port = 8080;
  std::string api_key;
  int quantize = 0;
  int q_group_size = 64;
  serve::ServeLimits limits;
  serve::SchedulerOptions scheduler;
  KVCacheType kv_cache = KVCacheType::F32;
  GemvActivations decode_activations = serve::ServeOptions{}.decode_activations;
};

// NAME=DIR, or DIR alone (named after its folder).
std::pair<std::string, std::filesystem::path> named_adapter(const std::string& arg) {
  const auto eq = arg.find('=');
  if (eq == std::string::npos) {
    const std::filesystem::path dir(arg);
    return {std::filesystem::absolute(dir).lexically_normal().filename().string(), dir};
  }
  if (eq == 0 || eq + 1 == arg.size())
    throw std::runtime_error("--adapter-path wants NAME=DIR, got '" + arg + "'");
  return {arg.substr(0, eq), arg.substr(eq + 1)};
}

// SIGTERM and SIGINT stop the server cleanly: answers in progress end with an error object their
// clients see, waiting requests get 503, and the process exits 0. The signals are blocked before
// the server starts its threads (they inherit the mask); one thread waits for them.
class BlockedStopSignals {
 public:
  BlockedStopSignals() {
    sigemptyset(&signals_);
    sigaddset(&signals_, SIGTERM);
    sigaddset(&signals_, SIGINT);
    pthread_sigmask(SIG_BLOCK, &signals_, &previous_);
  }
  ~BlockedStopSignals() { pthread_sigmask(SIG_SETMASK, &previous_, nullptr); }
  BlockedStopSignals(const BlockedStopSignals&) = delete;
  BlockedStopSignals& operator=(const BlockedStopSignals&) = delete;
  const sigset_t& signals() const { return signals_; }

 private:
  sigset_t signals_{}, previous_{};
};

// Made after the server and gone before it: the server's own stop never runs beside this one.
class StopOnSignal {
 public:
  StopOnSignal(serve::Server& server, const sigset_t& signals)
      : waiter_([&server, &signals] {
          int signal = 0;
          sigwait(&signals, &signal);
          server.stop();
        }) {}
  ~StopOnSignal() {
    // Wakes the waiter when the server stopped without a signal (its stop() is then a no-op).
    pthread_kill(waiter_.native_handle(), SIGTERM);
    waiter_.join();
  }
  StopOnSignal(const StopOnSignal&) = delete;
  StopOnSignal& operator=(const StopOnSignal&) = delete;

 private:
  std::thread waiter_;
};

void run_serve(const ServeFlags& f, const GlobalOptions& global) {
  LoadOptions load;
  load.quantize_bits = f.quantize;
  load.quantize_group_size = f.q_group_size;
  load.int8_decode_layout = f.decode_activations == GemvActivations::Int8;
  const Model model = load_model(f.model, load);
  serve::ServeOptions options;
  options.model_dir = f.model;
  options.model_name =
      f.model_name.empty()
          ? std::filesystem::absolute(f.model).lexically_normal().filename().string()
          : f.model_name;
  for (const auto& arg : f.adapter_paths) options.adapters.push_back(named_adapter(arg));
  options.adapter_dir = f.adapter_dir;
  options.api_key = f.api_key;
  options.limits = f.limits;
  options.scheduler = f.scheduler;
  options.kv_cache = f.kv_cache;
  options.decode_activations = f.decode_activations;
  const BlockedStopSignals blocked;
  serve::Server server(model, options);
  const int port = server.bind(f.host, f.port);
  // Scripts and tests read the bound address here (with --port 0 the system picks it).
  std::fprintf(stderr, "lora serve: listening on http://%s:%d (model '%s', %zu adapter(s))\n",
               f.host.c_str(), port, options.model_name.c_str(), options.adapters.size());
  std::fflush(stderr);
  (void)global;
  const StopOnSignal stop_on_signal(server, blocked.signals());
  server.listen();
}

}  // namespace

void add_serve(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve a model and its adapters over an OpenAI-compatible HTTP API, with a page at /");
  auto f = std::make_shared<ServeFlags>();
  cmd->add_option("--model", f->model, "Model folder (config.json, safetensors, tokenizer.json)")
      ->required();
  cmd->add_option("--model-name", f->model_name,
                  "The base's name in /v1/models and requests (default: the folder's name)");
  cmd->add_option("--adapter-path", f->adapter_paths,
                  "NAME=DIR: an adapter served as model NAME; repeatable");
  cmd->add_option("--adapter-dir", f->adapter_dir,
                  "Folder that /v1/load_lora_adapter may load adapters from (default: none)");
  cmd->add_option("--host", f->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", f->port, "Port (0: any free port, printed on stderr)")
      ->check(CLI::Range(0, 65535))
      ->capture_default_str();
  cmd->add_option("--api-key", f->api_key, "Require 'Authorization: Bearer KEY' on /v1/");
  add_quantize_flags(*cmd, f->quantize, f->q_group_size,
                     "Quantize float linears at load to this many bits (MLX affine; 0: as stored)");
  add_kv_cache_flag(*cmd, f->kv_cache);
  add_decode_activations_flag(*cmd, f->decode_activations);
  cmd->add_option("--parallel", f->scheduler.slots, "Requests generated at once")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--max-batch", f->scheduler.max_batch,
                  "Decode steps of concurrent requests run as one batched forward, this many at "
                  "most (1: each request stepped alone)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  cmd->add_option("--queue-size", f->scheduler.queue_size,
                  "Requests that may wait for a slot (more get 429)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  cmd->add_option("--max-body-bytes", f->limits.max_body_bytes, "Largest request body (413 above)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-prompt-tokens", f->limits.max_prompt_tokens, "Longest prompt")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--max-tokens-limit", f->limits.max_tokens,
                  "Most tokens a request may ask for (max_tokens)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->callback([f, &global] { run_serve(*f, global); });
}

}  // namespace lora::cli
