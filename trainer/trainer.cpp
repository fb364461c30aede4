#include "trainer/trainer.h"

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "trainer/evaluate.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/checkpoint.h"
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

// LORA_FAULT_SIGNAL_AT_STEP="STEP:SIGNAL" (tests): raise SIGNAL after optimizer step STEP.
std::pair<int64_t, int> fault_injection() {
  const char* v = std::getenv("LORA_FAULT_SIGNAL_AT_STEP");
  if (v == nullptr) return {-1, 0};
  long long step = -1;
  int sig = 0;
  if (std::sscanf(v, "%lld:%d", &step, &sig) != 2) return {-1, 0};
  return {step, sig};
}

// The adapter files go into the adapter folder one rename each, leaving checkpoints/ and
// metrics.jsonl beside them untouched (write_dir_atomic on the folder itself would replace them).
void write_adapter_files(const fs::path& adapter_dir, const LoraAdapter& adapter,
                         const Model& model, AdapterFormat format, const nlohmann::json& run_args) {
  const fs::path staging = adapter_dir / ".adapter-staging";
  save_adapter(staging, adapter, model, format, run_args);
  for (const auto& e : fs::directory_iterator(staging))
    fs::rename(e.path(), adapter_dir / e.path().filename());
  fs::remove_all(staging);
}

nlohmann::ordered_json run_arguments(const TrainOptions& o) {
  auto j = o.to_json();
  // The LoRA fields are written by save_adapter as lora_parameters.
  for (const char* k : {"rank", "scale", "alpha", "rslora", "dropout", "lora_keys"}) j.erase(k);
  return j;
}

// What happens around the steps of a run: the progress bar and train reports, validation, test,
// checkpoints and the adapter files, all into the adapter folder (created here).
class RunLog {
 public:
  RunLog(TrainRun& run, Progress& progress)
      : run_(run),
        progress_(progress),
        dir_(run.options.adapter_path),
        config_json_(run.options.to_json()),
        metrics_(created(dir_),
                 run.inputs.resumed ? run.inputs.resumed->content.metrics : std::string()) {
    const auto& train = run.inputs.data.train;
    progress.note("training " + std::to_string(run.adapter.num_parameters()) +
                  " LoRA parameters (" + std::to_string(run.adapter.modules.size()) +
                  " modules) on " + std::to_string(train.examples.size()) + " examples, " +
                  std::to_string(train.trained_tokens) + " trained tokens" +
                  (run.inputs.resumed ? ", resuming at step " + std::to_string(run.state.step)
                                      : std::string()));
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
    state.window_loss = 0.0;
    state.window_trained = window_tokens_ = 0;
    window_start_ = std::chrono::steady_clock::now();
  }

  // The validation loss over --val-batches (none without validation data).
  std::optional<double> validate(int64_t step) {
    if (!run_.valid_plan) return std::nullopt;
    const auto t0 = std::chrono::steady_clock::now();
    EvalResult r = evaluate(run_.model(), stack(), *run_.valid_plan, run_.options.val_batches);
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
    const data::BatchPlan plan(run_.inputs.data.test->examples, o.batch_size, uint64_t(o.seed),
                               false);
    EvalResult r = evaluate(run_.model(), stack(), plan, o.test_batches);
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
    save_checkpoint(dir, run_.adapter, run_.optimizer, run_.model(), run_.format, content);
    prune_checkpoints(dir_, run_.options.keep_checkpoints);
    return dir;
  }

  void write_adapter() {
    write_adapter_files(dir_, run_.adapter, run_.model(), run_.format, run_arguments(run_.options));
  }

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
  MetricsLog metrics_;
  int64_t window_tokens_ = 0;  // for tokens/s (not part of the exact state)
  std::chrono::steady_clock::time_point window_start_ = std::chrono::steady_clock::now();
};

}  // namespace

TrainResult train(const TrainOptions& o, Progress& progress) {
  // Everything that can fail on bad input happens before the adapter folder is touched.
  TrainRun run(o, progress);
  RunLog log(run, progress);
  StopSignals signals;
  const auto [fault_step, fault_signal] = fault_injection();
  TrainResult result;

  while (run.state.step < o.iters) {
    const int64_t step = run.state.step + 1;
    const float lr = run.learning_rate(step);
    log.step(step, train_step(run, step, lr), lr);
    if (o.steps_per_eval > 0 && step % o.steps_per_eval == 0 && step != o.iters) log.validate(step);
    // Signals are read twice: one that arrived during the step shares the step's checkpoint; one
    // that arrives after that (the fault injection raises here) gets its own before the stop.
    const bool stopping = signals.received() != 0;
    if ((o.save_every > 0 && step % o.save_every == 0) || (stopping && step < o.iters))
      result.checkpoint = log.checkpoint(step);
    if (step == fault_step) std::raise(fault_signal);
    if (signals.received() != 0 && step < o.iters) {
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
  log.write_adapter();
  progress.finish();
  return result;
}

}  // namespace lora
