#include "trainer/serve/scheduler.h"

#include <omp.h>

#include <optional>
#include <stdexcept>

#include "trainer/text_stream.h"

namespace lora::serve {

std::string Job::take(std::chrono::milliseconds wait, bool& finished) {
  std::unique_lock lock(mutex);
  changed.wait_for(lock, wait, [&] { return done || !text.empty(); });
  finished = done;
  return std::exchange(text, {});
}

bool Job::wait_begun(std::chrono::milliseconds limit) {
  std::unique_lock lock(mutex);
  changed.wait_for(lock, limit, [&] { return begun || done; });
  return done;
}

namespace {

void finish_job(Job& job, const std::string& reason, const std::string& tail,
                int64_t completion_tokens, const std::string& error = {}) {
  {
    std::lock_guard lock(job.mutex);
    job.text += tail;
    job.done = true;
    job.finish_reason = reason;
    job.completion_tokens = completion_tokens;
    job.error = error;
  }
  job.changed.notify_all();
}

AdapterStack stack_of(const Job& job) {
  AdapterStack stack;
  // The non-recording forward only reads the adapters; strengths come from the stack.
  for (const auto& a : job.adapters)
    stack.adapters.push_back(const_cast<LoraAdapter*>(&a->adapter));
  stack.strengths = job.strengths;
  return stack;
}

}  // namespace

struct Scheduler::Running {
  std::shared_ptr<Job> job;
  Decoding decoding;
  TextStream stream;
};

Scheduler::Scheduler(const Model& model, const data::Tokenizer& tokenizer, SchedulerOptions options)
    : model_(model), tokenizer_(tokenizer), options_(options) {
  if (options_.slots < 1 || options_.queue_size < 0 || options_.max_batch < 1)
    throw std::invalid_argument(
        "scheduler: needs a slot, a batch of one or more, and a queue of "
        "zero or more places");
  // OpenMP's thread count is a per-thread setting that a new thread does not inherit: the worker
  // takes its creator's (the CLI's --threads), not the machine's default.
  worker_ = std::thread([this, threads = omp_get_max_threads()] {
    omp_set_num_threads(threads);
    run();
  });
}

Scheduler::~Scheduler() { stop(); }

void Scheduler::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (worker_.joinable()) worker_.join();
}

Submitted Scheduler::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return Submitted::stopping;
    const int waiting = static_cast<int>(queue_.size());
    if (waiting >= options_.queue_size + options_.slots - active_count_.load())
      return Submitted::queue_full;
    queue_.push_back(std::move(job));
  }
  wake_.notify_all();
  return Submitted::accepted;
}

int Scheduler::queued() const {
  std::lock_guard lock(mutex_);
  return static_cast<int>(queue_.size());
}

void Scheduler::admit(std::vector<std::unique_ptr<Running>>& running) {
  std::unique_lock lock(mutex_);
  if (running.empty()) wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
  while (!queue_.empty() && static_cast<int>(running.size()) < options_.slots) {
    std::shared_ptr<Job> job = std::move(queue_.front());
    queue_.pop_front();
    if (job->cancelled) {
      finish_job(*job, "cancelled", {}, 0);
      continue;
    }
    try {
      Decoding decoding(model_, stack_of(*job), job->prompt, job->options);
      TextStream stream(tokenizer_, job->prompt, job->stop_strings);
      running.push_back(std::make_unique<Running>(job, std::move(decoding), std::move(stream)));
    } catch (const std::exception& e) {
      finish_job(*job, "error", {}, 0, e.what());
    }
  }
  active_count_ = static_cast<int>(running.size());
}

bool Scheduler::deliver(Running& r, const StepOutcome& outcome) {
  Job& job = *r.job;
  const auto tokens = static_cast<int64_t>(r.decoding.tokens().size());
  if (!outcome.error.empty()) {
    finish_job(job, "error", {}, tokens, outcome.error);
    return false;
  }
  if (!outcome.id) {
    const bool length = r.decoding.stop_reason() == "max_tokens";
    finish_job(job, length ? "length" : "stop", r.stream.finish(), tokens);
    return false;
  }
  std::string piece = r.stream.push(*outcome.id);
  if (r.stream.stopped()) {
    finish_job(job, "stop", piece, tokens);
    return false;
  }
  const bool first = r.decoding.tokens().size() == 1;
  if (!piece.empty() || first) {
    {
      std::lock_guard lock(job.mutex);
      job.text += piece;
      job.begun = true;
    }
    job.changed.notify_all();
  }
  return true;
}

void Scheduler::run() {
  std::vector<std::unique_ptr<Running>> running;
  while (true) {
    admit(running);
    {
      std::lock_guard lock(mutex_);
      if (stopping_) break;
    }
    // Sequences whose client has gone leave before the step.
    std::erase_if(running, [](const std::unique_ptr<Running>& r) {
      if (!r->job->cancelled) return false;
      finish_job(*r->job, "cancelled", {}, static_cast<int64_t>(r->decoding.tokens().size()));
      return true;
    });
    // One token for every running sequence, then look for new arrivals.
    std::vector<Decoding*> sequences;
    for (auto& r : running) sequences.push_back(&r->decoding);
    const std::vector<StepOutcome> outcomes = step_together(sequences, options_.max_batch);
    std::vector<std::unique_ptr<Running>> going_on;
    for (std::size_t i = 0; i < running.size(); ++i)
      if (deliver(*running[i], outcomes[i])) going_on.push_back(std::move(running[i]));
    running = std::move(going_on);
    active_count_ = static_cast<int>(running.size());
  }
  for (auto& r : running) finish_job(*r->job, "cancelled", {}, 0, "the server is stopping");
  std::lock_guard lock(mutex_);
  for (auto& job : queue_) finish_job(*job, "cancelled", {}, 0, "the server is stopping");
  queue_.clear();
}

}  // namespace lora::serve
