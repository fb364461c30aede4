#include "trainer/serve/server.h"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>

#include "trainer/chat_prompt.h"
#include "trainer/serve/adapter_registry.h"
#include "trainer/serve/api_error.h"
#include "trainer/serve/connection_watch.h"
#include "trainer/serve/openai_response.h"
#include "trainer/serve/web_page.h"

namespace lora::serve {

namespace {

using nlohmann::json;
using namespace std::chrono_literals;

// Longest wait for a streamed answer to begin before its headers (status 200) go out anyway.
constexpr auto kStatusWait = 20s;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

json parse_body(const httplib::Request& req) {
  try {
    return json::parse(req.body);
  } catch (const json::parse_error& e) {
    throw bad_request(std::string("the body is not valid JSON: ") + e.what());
  }
}

// A write to a client that has gone fails; while nothing else is written, probe once a second.
class Probe {
 public:
  bool due() {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < 1s) return false;
    last_ = now;
    return true;
  }

 private:
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

// The error object and status of a job that ended in error: the server stopping (503) or a
// failure of its own (500).
ApiError job_error(const Job& job) {
  return job.finish_reason == "cancelled" ? ApiError(503, job.error, "", "service_unavailable")
                                          : ApiError(500, job.error, "", "internal_error");
}

// Counts an answer in progress for as long as it lives.
class Counted {
 public:
  explicit Counted(std::atomic<int>& n) : n_(n) { ++n_; }
  ~Counted() { --n_; }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;

 private:
  std::atomic<int>& n_;
};

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

struct Server::Impl {
  Impl(const Model& m, ServeOptions o)
      : model(m),
        options(std::move(o)),
        tokenizer(data::Tokenizer::load(options.model_dir)),
        chat_prompt(ChatPrompt::load(options.model_dir)),
        registry(model, options.adapter_dir),
        scheduler(model, tokenizer, options.scheduler) {
    for (const auto& [name, path] : options.adapters) {
      if (name == options.model_name)
        throw std::runtime_error("adapter name '" + name + "' is the base model's name");
      registry.add(name, path);
    }
    routes();
  }

  void routes();
  std::shared_ptr<Job> make_job(const CompletionRequest& r);
  void complete(const httplib::Request& req, httplib::Response& res, bool chat);
  void whole_answer(const httplib::Request& req, httplib::Response& res, Job& job,
                    const ResponseHeader& header);
  void stream_answer(httplib::Response& res, const std::shared_ptr<Job>& job,
                     const ResponseHeader& header, bool include_usage);
  json models_json() const;

  // Every handler answers an ApiError with its status and error object.
  template <class F>
  httplib::Server::Handler guarded(F handler) {
    return [this, handler](const httplib::Request& req, httplib::Response& res) {
      try {
        handler(req, res);
      } catch (const ApiError& e) {
        send_json(res, e.status(), e.body());
      }
    };
  }

  const Model& model;
  ServeOptions options;
  data::Tokenizer tokenizer;
  ChatPrompt chat_prompt;
  AdapterRegistry registry;
  Scheduler scheduler;
  httplib::Server http;
  std::atomic<int64_t> next_id{1};
  std::atomic<int> open_answers{0};  // responses streaming from a job
  const int64_t started = unix_now();
};

json Server::Impl::models_json() const {
  json data = json::array();
  data.push_back({{"id", options.model_name},
                  {"object", "model"},
                  {"created", started},
                  {"owned_by", "loracpp"},
                  {"root", options.model_name},
                  {"parent", nullptr}});
  for (const auto& a : registry.list())
    data.push_back({{"id", a->name},
                    {"object", "model"},
                    {"created", started},
                    {"owned_by", "loracpp"},
                    {"root", a->path.string()},
                    {"parent", options.model_name},
                    {"lora_id", a->id}});
  return {{"object", "list"}, {"data", data}};
}

std::shared_ptr<Job> Server::Impl::make_job(const CompletionRequest& r) {
  auto job = std::make_shared<Job>();
  if (r.model != options.model_name) {
    auto adapter = registry.find(r.model);
    if (!adapter)
      throw ApiError(404, "The model '" + r.model + "' does not exist", "model", "model_not_found");
    job->adapters.push_back(adapter);
    job->strengths.push_back(r.adapter_scale.value_or(1.0f));
  }
  for (const LoraChoice& c : r.lora.value_or(std::vector<LoraChoice>{})) {
    auto adapter = registry.find(c.id);
    if (!adapter) throw bad_request("no adapter has id " + std::to_string(c.id), "lora");
    job->adapters.push_back(adapter);
    job->strengths.push_back(c.scale);
  }
  const bool dora = std::any_of(job->adapters.begin(), job->adapters.end(),
                                [](const auto& a) { return a->adapter.config.dora; });
  if (dora && job->adapters.size() > 1)
    throw bad_request("a DoRA adapter cannot be stacked with other adapters", "lora");
  job->prompt = r.chat ? chat_prompt.encode(tokenizer, r.messages)
                       : tokenizer.encode(r.prompt, /*add_special_tokens=*/true);
  if (job->prompt.empty()) throw bad_request("the prompt has no tokens", "prompt");
  const auto n = static_cast<int64_t>(job->prompt.size());
  if (n > options.limits.max_prompt_tokens)
    throw ApiError(400,
                   "the prompt has " + std::to_string(n) + " tokens, more than this server's " +
                       std::to_string(options.limits.max_prompt_tokens),
                   r.chat ? "messages" : "prompt", "context_length_exceeded");
  job->options.max_tokens = r.max_tokens;
  job->options.kv_cache = options.kv_cache;
  job->options.decode_activations = options.decode_activations;
  job->options.sampling = r.sampling;
  try {
    validate(r.sampling);
  } catch (const std::invalid_argument& e) {
    throw bad_request(e.what());
  }
  for (int64_t id : model.config.eos_token_ids)
    job->options.stop_ids.push_back(static_cast<int32_t>(id));
  job->stop_strings = r.stop;
  if (r.chat)
    for (auto& s : chat_prompt.stop_strings()) job->stop_strings.push_back(s);
  return job;
}

void Server::Impl::complete(const httplib::Request& req, httplib::Response& res, bool chat) {
  const CompletionRequest r = parse_completion_request(parse_body(req), chat, options.limits);
  std::shared_ptr<Job> job = make_job(r);
  const Submitted submitted = scheduler.submit(job);
  if (submitted == Submitted::queue_full)
    throw ApiError(429, "the server is busy (every slot and queue place is taken); retry later", "",
                   "rate_limit_exceeded");
  if (submitted == Submitted::stopping)
    throw ApiError(503, "the server is stopping", "", "service_unavailable");
  const ResponseHeader header{chat, (chat ? "chatcmpl-" : "cmpl-") + std::to_string(next_id++),
                              unix_now(), r.model};
  if (r.stream)
    stream_answer(res, job, header, r.include_usage);
  else
    whole_answer(req, res, *job, header);
}

void Server::Impl::whole_answer(const httplib::Request& req, httplib::Response& res, Job& job,
                                const ResponseHeader& header) {
  // Nothing is written before the answer is complete, so its status is the real one: a failure
  // at any point (the server stopping, an internal error) is an error status the client sees as
  // one. Meanwhile the connection is watched, so a client that leaves frees its slot.
  const Counted counted(open_answers);
  const ConnectionWatch connection(req);
  std::string text;
  for (bool finished = false; !finished;) {
    text += job.take(250ms, finished);
    if (!finished && !connection.client_connected()) {
      job.cancelled = true;
      // nginx's "client closed request": nobody is left to read it.
      send_json(res, 499, ApiError::error_body(499, "the client closed the connection"));
      return;
    }
  }
  if (!job.error.empty()) throw job_error(job);
  send_json(res, 200,
            completion_json(header, text, job.finish_reason,
                            {static_cast<int64_t>(job.prompt.size()), job.completion_tokens}));
}

void Server::Impl::stream_answer(httplib::Response& res, const std::shared_ptr<Job>& job,
                                 const ResponseHeader& header, bool include_usage) {
  // The status goes out with the first byte, so it is settled first: the handler waits until the
  // answer has begun (a queued request waits for its slot here), for at most kStatusWait, so
  // that a long queue never holds a client without headers until its HTTP library gives up. A
  // failure up to then (admission, the prompt's pass, the server stopping) is answered with its
  // own status; one after it ends the stream with an error event, as OpenAI's API does.
  if (job->wait_begun(kStatusWait) && !job->error.empty()) throw job_error(*job);
  const Usage prompt_usage{static_cast<int64_t>(job->prompt.size()), 0};
  // The client leaving (a failed write) cancels the job: its slot is freed at the next step. The
  // release runs once the response is over, however it ended.
  ++open_answers;
  auto release = [this, job](bool) {
    job->cancelled = true;
    --open_answers;
  };
  auto provider = [job, header, prompt_usage, include_usage, sent_role = false, probe = Probe()](
                      std::size_t, httplib::DataSink& sink) mutable {
    bool finished = false;
    const std::string text = job->take(250ms, finished);
    std::string out;
    if (header.chat && !sent_role) {
      out += sse_event(chunk_json(header, "", "", /*with_role=*/true));
      sent_role = true;
    }
    if (!text.empty()) out += sse_event(chunk_json(header, text));
    if (finished) {
      if (!job->error.empty()) {
        out += sse_event(job_error(*job).body());
      } else {
        out += sse_event(chunk_json(header, "", job->finish_reason));
        if (include_usage)
          out += sse_event(
              usage_chunk_json(header, {prompt_usage.prompt_tokens, job->completion_tokens}));
      }
      out += kSseDone;
    } else if (out.empty() && probe.due()) {
      out = ": waiting\n\n";  // an SSE comment: finds out whether the client is still there
    }
    if (!out.empty() && !sink.write(out.data(), out.size())) return false;
    if (finished) sink.done();
    return true;
  };
  res.set_chunked_content_provider("text/event-stream", provider, release);
}

void Server::Impl::routes() {
  // Threads for every running and waiting request, and some for quick answers (errors, 429s,
  // models) and idle keep-alive connections.
  http.new_task_queue = [n = options.scheduler.slots + options.scheduler.queue_size + 16] {
    return new httplib::ThreadPool(static_cast<std::size_t>(n));  // httplib owns and frees it
  };
  http.set_payload_max_length(options.limits.max_body_bytes);
  http.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (options.api_key.empty() || req.path.rfind("/v1/", 0) != 0)
      return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + options.api_key)
      return httplib::Server::HandlerResponse::Unhandled;
    send_json(res, 401,
              ApiError::error_body(401, "a valid API key is needed (Authorization: Bearer KEY)", "",
                                   "invalid_api_key"));
    return httplib::Server::HandlerResponse::Handled;
  });
  http.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string message = res.status == 413   ? "the request body is too large"
                                : res.status == 404 ? "no such endpoint"
                                                    : "the request failed";
    send_json(res, res.status, ApiError::error_body(res.status, message));
  });
  http.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string message = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          message = e.what();
        } catch (...) {
        }
        send_json(res, 500, ApiError::error_body(500, message));
      });

  http.Get("/", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(kWebPage, "text/html; charset=utf-8");
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200,
              {{"status", "ok"}, {"active", scheduler.active()}, {"queued", scheduler.queued()}});
  });
  http.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    send_json(res, 200, models_json());
  });
  http.Post("/v1/completions",
            guarded([this](const auto& req, auto& res) { complete(req, res, false); }));
  http.Post("/v1/chat/completions",
            guarded([this](const auto& req, auto& res) { complete(req, res, true); }));
  http.Post(
      "/v1/load_lora_adapter", guarded([this](const auto& req, auto& res) {
        const json body = parse_body(req);
        if (!body.is_object() || !body.contains("lora_name") || !body["lora_name"].is_string() ||
            !body.contains("lora_path") || !body["lora_path"].is_string())
          throw bad_request("the body needs string 'lora_name' and 'lora_path'");
        const std::string name = body["lora_name"];
        if (name == options.model_name)
          throw bad_request("'" + name + "' is the base model's name", "lora_name");
        registry.load(name, body["lora_path"].get<std::string>());
        send_json(
            res, 200,
            {{"status", "loaded"}, {"lora_name", name}, {"lora_id", registry.find(name)->id}});
      }));
  http.Post(
      "/v1/unload_lora_adapter", guarded([this](const auto& req, auto& res) {
        const json body = parse_body(req);
        if (!body.is_object() || !body.contains("lora_name") || !body["lora_name"].is_string())
          throw bad_request("the body needs a string 'lora_name'");
        registry.unload(body["lora_name"]);
        send_json(res, 200, {{"status", "unloaded"}, {"lora_name", body["lora_name"]}});
      }));
}

Server::Server(const Model& model, ServeOptions options)
    : impl_(std::make_unique<Impl>(model, std::move(options))) {}

Server::~Server() { stop(); }

int Server::bind(const std::string& host, int port) {
  if (port == 0) {
    const int bound = impl_->http.bind_to_any_port(host);
    if (bound < 0) throw std::runtime_error("cannot bind " + host + " to a free port");
    return bound;
  }
  if (!impl_->http.bind_to_port(host, port))
    throw std::runtime_error("cannot bind " + host + ":" + std::to_string(port) +
                             " (in use, or not an address of this machine)");
  return port;
}

void Server::listen() { impl_->http.listen_after_bind(); }

void Server::stop() {
  // The scheduler first: every job ends (those running with an error, the waiting ones refused),
  // and new requests get 503. The answers in progress then write their error; httplib stops
  // writing them once it is stopped, so it waits for them (a client that reads nothing more is
  // not waited for long).
  impl_->scheduler.stop();
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (impl_->open_answers > 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(10ms);
  impl_->http.stop();
}

}  // namespace lora::serve
