// Runs the server's generations: a bounded queue feeding a fixed number of slots, each slot one
// sequence with its own KV cache. One worker thread gives every active sequence a token per step,
// so a long answer never blocks a short one; the decode steps of all of them run as one batched
// forward (trainer/batched_decode.h), which reads the base's weights once for the whole batch,
// and the model's kernels keep every core.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "data/tokenizer/tokenizer.h"
#include "trainer/batched_decode.h"
#include "trainer/serve/adapter_registry.h"

namespace lora::serve {

// One request's generation: what to run, and the text coming back.
struct Job {
  std::vector<int32_t> prompt;
  GenerateOptions options;
  std::vector<std::string> stop_strings;
  std::vector<std::shared_ptr<const ServedAdapter>> adapters;  // kept alive while it runs
  std::vector<float> strengths;                                // one per adapter

  // Set by the server thread when its client has gone: the slot is freed at the next step.
  std::atomic<bool> cancelled{false};

  // Written by the worker, read by the request's thread under `mutex`.
  std::mutex mutex;
  std::condition_variable changed;
  std::string text;    // new text not yet taken
  bool begun = false;  // the first token is out: the prompt ran and the answer goes on
  bool done = false;
  std::string finish_reason;  // "stop", "length", "cancelled" or "error"
  std::string error;
  int64_t completion_tokens = 0;

  // Waits up to `wait` for new text or the end; returns the text not yet taken.
  std::string take(std::chrono::milliseconds wait, bool& finished);
  // Waits up to `limit` until the answer has begun or ended (queued, admitted, its prompt run);
  // true when it has ended (then `error`, `finish_reason` and `completion_tokens` no longer
  // change).
  bool wait_begun(std::chrono::milliseconds limit);
};

struct SchedulerOptions {
  int slots = 4;        // sequences generated at once
  int queue_size = 16;  // waiting beyond the slots; more are refused
  int max_batch = 8;    // decode steps batched together (1: each sequence stepped alone)
};

enum class Submitted { accepted, queue_full, stopping };

class Scheduler {
 public:
  Scheduler(const Model& model, const data::Tokenizer& tokenizer, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  Submitted submit(std::shared_ptr<Job> job);
  void stop();
  int active() const { return active_count_.load(); }
  int queued() const;

 private:
  struct Running;
  void run();
  void admit(std::vector<std::unique_ptr<Running>>& running);
  // Hands `r` the outcome of its step; false once it has finished (its job is then marked done).
  bool deliver(Running& r, const StepOutcome& outcome);

  const Model& model_;
  const data::Tokenizer& tokenizer_;
  SchedulerOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::shared_ptr<Job>> queue_;
  bool stopping_ = false;
  std::atomic<int> active_count_{0};
  std::thread worker_;
};

}  // namespace lora::serve
