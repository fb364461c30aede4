#include "trainer/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <stdexcept>

#include "data/batch.h"
#include "data/dataset_encode.h"
#include "trainer/evaluate.h"
#include "trainer/gguf_tokenizer.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/checkpoint.h"
#include "trainer/metrics.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/transformer.h"

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

LoraConfig lora_config_from(const TrainOptions& o, int64_t model_layers) {
  LoraConfig c;
  c.rank = int(o.rank);
  if (o.alpha > 0) {
    c.alpha = float(o.alpha);
    c.rslora = o.rslora;
  } else {
    c.scale = float(o.scale);
  }
  c.dropout = float(o.dropout);
  c.num_layers = o.num_layers < 0 ? -1 : int(std::min<int64_t>(o.num_layers, model_layers));
  c.keys.clear();
  for (const auto& k : o.lora_keys) {
    auto p = proj_from_name(k);
    if (!p)
      throw std::runtime_error("--lora-keys: unknown projection \"" + k +
                               "\" (expected q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                               "down_proj)");
    if (std::find(c.keys.begin(), c.keys.end(), *p) == c.keys.end()) c.keys.push_back(*p);
  }
  return c;
}

// Copies the A/B values of a saved adapter into `adapter`, module by module.
void start_from_adapter(LoraAdapter& adapter, const fs::path& path, const Model& model) {
  LoraAdapter saved = load_adapter(path, model);
  for (auto& m : adapter.modules) {
    const LoraModule* s = saved.find(m.layer, m.proj);
    const std::string name =
        "model.layers." + std::to_string(m.layer) + "." + std::string(proj_module_path(m.proj));
    if (s == nullptr)
      throw std::runtime_error(path.string() + ": --resume-adapter-file has no " + name +
                               " (this run adapts it; check --num-layers and --lora-keys)");
    if (s->A.value.shape != m.A.value.shape || s->B.value.shape != m.B.value.shape)
      throw std::runtime_error(path.string() + ": " + name + " has A " + s->A.value.shape_str() +
                               ", B " + s->B.value.shape_str() + " but this run's --rank gives A " +
                               m.A.value.shape_str() + ", B " + m.B.value.shape_str());
    m.A.value = s->A.value;
    m.B.value = s->B.value;
  }
  if (saved.modules.size() != adapter.modules.size())
    throw std::runtime_error(path.string() + ": --resume-adapter-file has " +
                             std::to_string(saved.modules.size()) + " LoRA modules, this run " +
                             std::to_string(adapter.modules.size()) +
                             " (check --num-layers and --lora-keys)");
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

std::string data_fingerprint(const data::EncodedSet& set) {
  std::string bytes;
  for (const auto& ex : set.examples) {
    bytes.append(reinterpret_cast<const char*>(ex.ids.data()), ex.ids.size() * sizeof(int32_t));
    bytes.append(reinterpret_cast<const char*>(ex.trained.data()), ex.trained.size());
    bytes.push_back('\n');
  }
  return fnv1a_hex(bytes);
}

nlohmann::ordered_json run_arguments(const TrainOptions& o) {
  auto j = o.to_json();
  // The LoRA fields are written by save_adapter as lora_parameters.
  for (const char* k : {"rank", "scale", "alpha", "rslora", "dropout", "lora_keys"}) j.erase(k);
  return j;
}

}  // namespace

TrainResult train(const TrainOptions& o, Progress& progress) {
  o.validate();
  const fs::path adapter_dir = o.adapter_path;

  // Everything that can fail on bad input happens before the adapter folder is touched.
  std::optional<LoadedCheckpoint> ckpt;
  if (!o.resume.empty()) ckpt = load_checkpoint(resolve_checkpoint(o.resume));

  LoadOptions load;
  load.quantize_bits = int(o.quantize);
  load.quantize_group_size = int(o.q_group_size);
  const Model model = load_model(o.model, load);
  const auto tokenizer = load_model_tokenizer(o.model);
  const auto tok_config = load_model_tokenizer_config(o.model);
  data::EncodeOptions enc;
  enc.mask_prompt = o.mask_prompt;
  enc.max_seq_length = std::size_t(o.max_seq_length);
  enc.chat_format = o.chat_format;
  const data::RecordEncoder encoder(tokenizer, tok_config, enc);

  const bool want_valid = o.val_batches != 0;
  fs::path train_file = o.train_file, valid_file = o.valid_file;
  if (!o.data.empty()) {
    auto files = data::DataFiles::in_folder(o.data, want_valid && valid_file.empty());
    if (train_file.empty()) train_file = files.train;
    if (valid_file.empty()) valid_file = files.valid;
  }
  if (want_valid && valid_file.empty())
    throw std::runtime_error(
        "no validation data: pass --valid FILE, a --data folder with "
        "valid.jsonl, or --val-batches 0");
  const auto line_cap = std::size_t(o.max_line_bytes);
  const data::EncodedSet train_set = load_split(train_file, encoder, line_cap);
  std::optional<data::EncodedSet> valid_set;
  if (want_valid) valid_set = load_split(valid_file, encoder, line_cap);
  if (train_set.trained_tokens == 0)
    throw std::runtime_error(train_file.string() +
                             ": no token carries loss (every token is "
                             "masked as prompt)");
  if (train_set.truncated > 0)
    progress.note(std::to_string(train_set.truncated) + " of " +
                  std::to_string(train_set.examples.size()) +
                  " training examples were longer than " + "--max-seq-length " +
                  std::to_string(o.max_seq_length) + " and were truncated");
  if (valid_set && valid_set->truncated > 0)
    progress.note(std::to_string(valid_set->truncated) + " validation examples were truncated");
  // --test: the test file is read and encoded now, so a missing or broken one fails before any
  // training time is spent (and before the adapter folder is written).
  std::optional<data::EncodedSet> test_set;
  if (o.test) {
    const fs::path test_file =
        o.data.empty() ? fs::path() : data::DataFiles::in_folder(o.data, false).test;
    if (test_file.empty())
      throw std::runtime_error("--test: no test.jsonl in the data folder " +
                               (o.data.empty() ? std::string("(no --data given)") : o.data));
    test_set = load_split(test_file, encoder, line_cap);
  }

  const ComputeDType compute = compute_dtype_named(o.compute_dtype);
  if (compute == ComputeDType::BF16 && !uses_bf16(compute))
    progress.note("--compute-dtype bf16: this CPU has no bf16 matmul units; running in f32");

  const std::string model_fp = model_fingerprint(model);
  const std::string data_fp = data_fingerprint(train_set);
  if (ckpt) {
    const auto& c = ckpt->content;
    if (c.model_fingerprint != model_fp)
      throw std::runtime_error(ckpt->dir.string() +
                               ": the checkpoint was made with another model ("
                               "config or weight shapes differ from " +
                               o.model + ")");
    if (std::string diff = identity_differences(o, c.config); !diff.empty())
      throw std::runtime_error(ckpt->dir.string() + ": incompatible settings: " + diff);
    if (c.data_fingerprint != data_fp)
      throw std::runtime_error(ckpt->dir.string() + ": the training data (" + train_file.string() +
                               ") differs from the data the checkpoint was trained on");
    if (c.progress.step >= o.iters)
      throw std::runtime_error(ckpt->dir.string() + ": the checkpoint is at step " +
                               std::to_string(c.progress.step) + ", not before --iters " +
                               std::to_string(o.iters) + "; raise --iters to train further");
  }

  LoraAdapter adapter =
      LoraAdapter::create(model, lora_config_from(o, model.config.num_layers), uint64_t(o.seed));
  if (adapter.modules.empty())
    throw std::runtime_error("--lora-keys and --num-layers adapt nothing");
  if (!o.resume_adapter_file.empty() && !ckpt)
    start_from_adapter(adapter, o.resume_adapter_file, model);
  OptimizerConfig oc;
  oc.name = o.optimizer;
  oc.weight_decay = float(o.weight_decay);
  oc.momentum = float(o.momentum);
  Optimizer optimizer(oc, adapter.parameters());
  TrainProgress state;
  if (ckpt) {
    restore_checkpoint(*ckpt, adapter, optimizer);
    state = ckpt->content.progress;
  }

  const data::BatchPlan train_plan(train_set.examples, o.batch_size, uint64_t(o.seed));
  std::optional<data::BatchPlan> valid_plan;
  if (valid_set) valid_plan.emplace(valid_set->examples, o.batch_size, uint64_t(o.seed), false);
  ScheduleConfig schedule;
  schedule.type = o.lr_schedule;
  schedule.warmup_steps = o.warmup;
  schedule.warmup_init = float(o.warmup_init);
  schedule.total_steps = o.iters;
  const auto format = adapter_format_from_name(o.format);
  const auto config_json = o.to_json();
  const auto run_args = run_arguments(o);

  fs::create_directories(adapter_dir);
  MetricsLog metrics(adapter_dir, ckpt ? ckpt->content.metrics : std::string());
  progress.note("training " + std::to_string(adapter.num_parameters()) + " LoRA parameters (" +
                std::to_string(adapter.modules.size()) + " modules) on " +
                std::to_string(train_set.examples.size()) + " examples, " +
                std::to_string(train_set.trained_tokens) + " trained tokens" +
                (ckpt ? ", resuming at step " + std::to_string(state.step) : std::string()));

  auto validate = [&](int64_t step) -> std::optional<double> {
    if (!valid_plan) return std::nullopt;
    const auto t0 = std::chrono::steady_clock::now();
    AdapterStack stack;
    stack.adapters = {&adapter};
    EvalResult r = evaluate(model, stack, *valid_plan, o.val_batches);
    nlohmann::ordered_json rec = {
        {"type", "val"},
        {"step", step},
        {"loss", r.loss},
        {"perplexity", r.perplexity()},
        {"tokens", r.tokens},
        {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}};
    metrics.append(rec);
    progress.record(rec);
    return r.loss;
  };
  auto checkpoint = [&](int64_t step) {
    CheckpointContent content{state, config_json, model_fp, data_fp, metrics.text()};
    const fs::path dir = checkpoint_dir(adapter_dir, step);
    save_checkpoint(dir, adapter, optimizer, model, format, content);
    prune_checkpoints(adapter_dir, o.keep_checkpoints);
    return dir;
  };

  StopSignals signals;
  const auto [fault_step, fault_signal] = fault_injection();
  TrainResult result;
  Progress& bar = progress;
  int64_t window_tokens = 0;  // for tokens/s (not part of the exact state)
  auto window_start = std::chrono::steady_clock::now();
  std::optional<double> last_val;
  const auto params = adapter.parameters();

  while (state.step < o.iters) {
    const int64_t step = state.step + 1;
    const float lr = learning_rate_at(schedule, float(o.learning_rate), step - 1);
    // The micro-batches of this step, so the loss can be normalized by all their trained tokens.
    std::vector<data::Batch> micro;
    int64_t step_trained = 0, step_tokens = 0;
    for (int64_t a = 0; a < o.grad_accumulation_steps; ++a) {
      micro.push_back(train_plan.next(state.cursor));
      step_trained += micro.back().trained_tokens;
      step_tokens += micro.back().tokens;
    }
    for (ag::Parameter* p : params) p->zero_grad();
    double step_loss = 0.0;
    const float normalizer = float(std::max<int64_t>(step_trained, 1));
    for (std::size_t a = 0; a < micro.size(); ++a) {
      const data::Batch& b = micro[a];
      if (b.trained_tokens == 0) continue;
      ag::Tape tape;
      tape.set_release_values(true);  // only the loss (the seed) is read after backward
      AdapterStack stack;
      stack.adapters = {&adapter};
      stack.training = true;
      // Dropout masks are a pure function of (seed, step, micro-batch): nothing to checkpoint.
      stack.dropout_seed = data::mix64(uint64_t(o.seed) ^ data::mix64(uint64_t(step) * 1024 + a));
      ForwardOptions fo;
      fo.grad_checkpoint = o.grad_checkpoint;
      fo.compute_dtype = compute;
      ag::Var hidden =
          forward_hidden(tape, model, stack, b.inputs, b.batch, b.seq, b.key_valid, fo);
      ag::Var loss =
          ag::cross_entropy_head(tape, hidden, model.head(), b.targets, b.weights, normalizer);
      tape.backward(loss);
      step_loss += double(loss->value.data[0]);
    }
    if (!std::isfinite(step_loss))
      throw std::runtime_error("step " + std::to_string(step) + ": the loss is not finite (" +
                               std::to_string(step_loss) + "); lower --learning-rate");
    if (o.grad_clip > 0) clip_grad_norm(params, float(o.grad_clip));
    optimizer.step(lr);
    state.step = step;
    state.trained_tokens += step_trained;
    state.window_loss += step_loss * double(step_trained);
    state.window_trained += step_trained;
    window_tokens += step_tokens;
    bar.step(step, float(step_loss), lr, step_tokens);

    if (step % o.steps_per_report == 0 || step == o.iters) {
      const double secs =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
      nlohmann::ordered_json rec = {
          {"type", "train"},
          {"step", step},
          {"loss",
           state.window_trained > 0 ? state.window_loss / double(state.window_trained) : 0.0},
          {"lr", lr},
          {"trained_tokens", state.trained_tokens},
          {"tokens_per_sec", secs > 0 ? double(window_tokens) / secs : 0.0}};
      metrics.append(rec);
      progress.record(rec);
      state.window_loss = 0.0;
      state.window_trained = window_tokens = 0;
      window_start = std::chrono::steady_clock::now();
    }
    if (o.steps_per_eval > 0 && step % o.steps_per_eval == 0 && step != o.iters)
      last_val = validate(step);
    const bool stopping = signals.received() != 0;
    if ((o.save_every > 0 && step % o.save_every == 0) || (stopping && step < o.iters))
      result.checkpoint = checkpoint(step);
    if (step == fault_step) std::raise(fault_signal);
    if (signals.received() != 0 && step < o.iters) {
      if (!stopping) result.checkpoint = checkpoint(step);
      progress.finish();
      result.interrupted = true;
      result.steps = step;
      return result;
    }
  }
  result.steps = state.step;
  result.final_val_loss = validate(state.step);
  if (test_set) {
    const data::BatchPlan test_plan(test_set->examples, o.batch_size, uint64_t(o.seed), false);
    AdapterStack stack;
    stack.adapters = {&adapter};
    EvalResult r = evaluate(model, stack, test_plan, o.test_batches);
    nlohmann::ordered_json rec = {{"type", "test"},
                                  {"step", state.step},
                                  {"loss", r.loss},
                                  {"perplexity", r.perplexity()},
                                  {"tokens", r.tokens}};
    metrics.append(rec);
    progress.record(rec);
    result.test_loss = r.loss;
  }
  write_adapter_files(adapter_dir, adapter, model, format, run_args);
  progress.finish();
  return result;
}

}  // namespace lora
