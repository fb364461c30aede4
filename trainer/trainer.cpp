#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <utility>

#include "trainer/evaluate.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/checkpoint.h"
#include "trainer/io/output_preflight.h"
#include "trainer/metrics.h"
#include "trainer/train_run.h"
#include "trainer/train_step.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

// The one piece of global state: a signal handler can reach nothing else. It only records which
// signal arrived; the loop finishes its step, saves a checkpoint and returns.
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void record_stop_signal(int sig) { g_stop_signal = sig; }

// Installs SIGINT/SIGTERM handlers for the life of a run, restoring the previous ones after.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = record_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;
  int received() const { return g_stop_signal; }

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

// LORA_FAULT_SIGNAL_AT_STEP="STEP:SIGNAL[:PHASE]" (tests): raise SIGNAL at optimizer step STEP,
// in PHASE: "step" (after the step and its checkpoint; the default), "checkpoint" (the checkpoint
// files written, not yet renamed into place), "validation" (validation loss computed, not logged)
// or "adapter" (the final adapter half moved into place). LORA_FAULT_RANK=R: on rank R only.
struct FaultInjection {
  int64_t step = -1;
  int signal = 0;
  std::string phase = "step";
  static FaultInjection from_env(int rank) {
    FaultInjection f;
    const char* v = std::getenv("LORA_FAULT_SIGNAL_AT_STEP");
    if (v == nullptr) return f;
    if (const char* r = std::getenv("LORA_FAULT_RANK"); r != nullptr && std::atoi(r) != rank)
      return f;
    long long step = -1;
    int sig = 0;
    char phase[16] = "step";
    if (std::sscanf(v, "%lld:%d:%15s", &step, &sig, phase) < 2) return f;
    f.step = step;
    f.signal = sig;
    f.phase = phase;
    return f;
  }
  void at(const char* where, int64_t now) const {
    if (now == step && phase == where) std::raise(signal);
  }
};

// Refuses a run whose adapter folder cannot hold what the run will write, before any step.
void check_output_room(const TrainOptions& o, const LoraAdapter& adapter, Optimizer& optimizer) {
  const int64_t slots =
      int64_t(!optimizer.first_moments().empty()) + int64_t(!optimizer.second_moments().empty());
  const int64_t kept =
      o.save_every > 0 ? std::min(std::max<int64_t>(o.keep_checkpoints, 1), o.iters / o.save_every)
                       : 0;
  check_free_space(o.adapter_path,
                   training_output_bytes(adapter.num_parameters(), slots, kept, o.iters));
}

nlohmann::ordered_json run_arguments(const TrainOptions& o) {
  auto j = o.to_json();
  // The LoRA fields are written by save_adapter as lora_parameters.
  for (const char* k :
       {"rank", "scale", "alpha", "rslora", "dropout", "lora_keys", "fine_tune_type"})
    j.erase(k);
  return j;
}

// What happens around the steps of a run: the progress bar and train reports, validation, test,
// checkpoints and the adapter files, all into the adapter folder (created here). In a
// data-parallel run every rank keeps the log and evaluates its share; rank 0 alone writes.
class RunLog {
 public:
  RunLog(TrainRun& run, Progress& progress)
      : run_(run),
        progress_(progress),
        dir_(run.options.adapter_path),
        config_json_(run.options.to_json()),
        writes_(run.comm.is_root()),
        fault_(FaultInjection::from_env(run.comm.rank())),
        metrics_(writes_ ? created(dir_) : fs::path(),
                 run.inputs.resumed ? run.inputs.resumed->content.metrics : std::string()) {
    const auto& train = run.inputs.data.train->summary();
    progress.note(
        "training " + std::to_string(run.adapter.num_parameters()) +
        (run.adapter.config.full
             ? " parameters (" + std::to_string(run.adapter.blocks.size()) + " full blocks) on "
             : " LoRA parameters (" + std::to_string(run.adapter.modules.size()) +
                   " modules) on ") +
        std::to_string(train.examples) + " examples, " + std::to_string(train.trained_tokens) +
        " trained tokens" +
        (run.inputs.resumed ? ", resuming at step " + std::to_string(run.state.step)
                            : std::string()) +
        (run.comm.size() > 1 ? "; data-parallel on " + run.comm.describe() : std::string()));
  }

  // After every step: the bar, and a train record every --steps-per-report steps and at the end.
  void step(int64_t step, const StepResult& r, float lr) {
    const TrainOptions& o = run_.options;
    window_tokens_ += r.tokens;
    progress_.step(step, float(r.loss), lr, r.tokens);
    if (step % o.steps_per_report != 0 && step != o.iters) return;
    TrainProgress& state = run_.state;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start_).count();
    nlohmann::ordered_json rec = {
        {"type", "train"},
        {"step", step},
        {"loss", state.window_trained > 0 ? state.window_loss / double(state.window_trained) : 0.0},
        {"lr", lr},
        {"trained_tokens", state.trained_tokens},
        {"tokens_per_sec", secs > 0 ? double(window_tokens_) / secs : 0.0}};
    record(rec);
    last_train_loss_ = rec["loss"].get<double>();
    state.window_loss = 0.0;
    state.window_trained = window_tokens_ = 0;
    window_start_ = std::chrono::steady_clock::now();
  }

  // The validation loss over --val-batches (none without validation data).
  std::optional<double> validate(int64_t step) {
    if (!run_.valid_plan) return std::nullopt;
    const auto t0 = std::chrono::steady_clock::now();
    EvalResult r =
        evaluate(run_.model(), stack(), *run_.valid_plan, run_.options.val_batches, run_.comm);
    fault_.at("validation", step);
    nlohmann::ordered_json rec = {
        {"type", "val"},
        {"step", step},
        {"loss", r.loss},
        {"perplexity", r.perplexity()},
        {"tokens", r.tokens},
        {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
    record(rec);
    return r.loss;
  }

  // --test: the loss over --test-batches of the test split (none without --test).
  std::optional<double> test(int64_t step) {
    if (!run_.inputs.data.test) return std::nullopt;
    const TrainOptions& o = run_.options;
    const data::BatchPlan plan(run_.inputs.data.test, o.batch_size, uint64_t(o.seed), false);
    EvalResult r = evaluate(run_.model(), stack(), plan, o.test_batches, run_.comm);
    record({{"type", "test"},
            {"step", step},
            {"loss", r.loss},
            {"perplexity", r.perplexity()},
            {"tokens", r.tokens}});
    return r.loss;
  }

  fs::path checkpoint(int64_t step) {
    const RunInputs& in = run_.inputs;
    CheckpointContent content{run_.state, config_json_, in.model_fingerprint, in.data_fingerprint,
                              metrics_.text()};
    const fs::path dir = checkpoint_dir(dir_, step);
    if (!writes_) return dir;
    save_checkpoint(dir, run_.adapter, run_.optimizer, run_.model(), run_.format, content,
                    [&](const fs::path&) { fault_.at("checkpoint", step); });
    prune_checkpoints(dir_, run_.options.keep_checkpoints);
    return dir;
  }

  // The adapter files, with the run's data, steps and final losses for the model card.
  void write_adapter(std::optional<double> valid_loss, std::optional<double> test_loss) {
    if (!writes_) return;
    const TrainOptions& o = run_.options;
    const TrainingRun training{o.data.empty() ? o.train_file : o.data, run_.state.step,
                               last_train_loss_, valid_loss, test_loss};
    save_adapter(dir_, run_.adapter, run_.model(), run_.format, run_arguments(o), training,
                 [&] { fault_.at("adapter", run_.state.step); });
  }

  // The fault injection's "step" phase (tests).
  void after_step(int64_t step) const { fault_.at("step", step); }

 private:
  static const fs::path& created(const fs::path& dir) {
    fs::create_directories(dir);
    return dir;
  }
  AdapterStack stack() {
    AdapterStack s;
    s.adapters = {&run_.adapter};
    return s;
  }
  void record(const nlohmann::ordered_json& rec) {
    metrics_.append(rec);
    progress_.record(rec);
  }

  TrainRun& run_;
  Progress& progress_;
  const fs::path dir_;
  const nlohmann::ordered_json config_json_;
  const bool writes_;  // rank 0 (or the one process)
  const FaultInjection fault_;
  MetricsLog metrics_;
  int64_t window_tokens_ = 0;              // for tokens/s (not part of the exact state)
  std::optional<double> last_train_loss_;  // the last train record's loss
  std::chrono::steady_clock::time_point window_start_ = std::chrono::steady_clock::now();
};

}  // namespace

TrainResult train(const TrainOptions& o, Progress& progress, const ParallelOptions& parallel) {
  // Everything that can fail on bad input happens before the adapter folder is touched.
  const bool writes = parallel.comm == nullptr || parallel.comm->is_root();
  if (writes) check_folder_writable(o.adapter_path);
  TrainRun run(o, progress, parallel);
  if (writes) check_output_room(o, run.adapter, run.optimizer);
  RunLog log(run, progress);
  StopSignals signals;
  // A stop signal ends the run on the step every rank agrees on.
  auto stop_requested = [&] {
    return run.comm.any(signals.received() != 0, "stop-signal exchange");
  };
  TrainResult result;

  while (run.state.step < o.iters) {
    const int64_t step = run.state.step + 1;
    const float lr = run.learning_rate(step);
    log.step(step, train_step(run, step, lr), lr);
    if (o.steps_per_eval > 0 && step % o.steps_per_eval == 0 && step != o.iters) log.validate(step);
    // Signals are read twice: one that arrived during the step shares the step's checkpoint; one
    // that arrives after that (the fault injection raises here) gets its own before the stop.
    const bool stopping = stop_requested();
    // The last step's checkpoint is written after the adapter (below): a run killed before then
    // resumes from the one before and redoes the end, instead of finding itself finished.
    if ((o.save_every > 0 && step % o.save_every == 0 && step < o.iters) ||
        (stopping && step < o.iters))
      result.checkpoint = log.checkpoint(step);
    log.after_step(step);
    if (stop_requested() && step < o.iters) {
      if (!stopping) result.checkpoint = log.checkpoint(step);
      progress.finish();
      result.interrupted = true;
      result.steps = step;
      return result;
    }
  }
  result.steps = run.state.step;
  result.final_val_loss = log.validate(run.state.step);
  result.test_loss = log.test(run.state.step);
  log.write_adapter(result.final_val_loss, result.test_loss);
  if (o.save_every > 0 && run.state.step % o.save_every == 0)
    result.checkpoint = log.checkpoint(run.state.step);
  progress.finish();
  return result;
}

}  // namespace lora
