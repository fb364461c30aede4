// Runs the server's generations: a bounded queue feeding a fixed number of slots, each slot one
// sequence with its own KV cache. One worker thread steps every active sequence in turn (a token
// each), so a long answer never blocks a short one, and the model's kernels keep every core.
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
#include "trainer/decoding.h"
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
  std::string text;  // new text not yet taken
  bool done = false;
  std::string finish_reason;  // "stop", "length", "cancelled" or "error"
  std::string error;
  int64_t completion_tokens = 0;

  // Waits up to `wait` for new text or the end; returns the text not yet taken.
  std::string take(std::chrono::milliseconds wait, bool& finished);
};

struct SchedulerOptions {
  int slots = 4;        // sequences generated at once
  int queue_size = 16;  // waiting beyond the slots; more are refused
};

class Scheduler {
 public:
  Scheduler(const Model& model, const data::Tokenizer& tokenizer, SchedulerOptions options);
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;
  // False when the queue is full or the scheduler is stopping.
  bool submit(std::shared_ptr<Job> job);
  void stop();
  int active() const { return active_count_.load(); }
  int queued() const;

 private:
  struct Running;
  void run();
  void admit(std::vector<std::unique_ptr<Running>>& running);
  // One token for `r`; false once it has finished (its job is then marked done).
  bool step(Running& r);

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
