#include "trainer/train_run.h"

#include <algorithm>
#include <stdexcept>

#include "autograd/cpu_features.h"
#include "trainer/evaluate.h"
#include "trainer/gguf_tokenizer.h"
#include "trainer/setting_error.h"
#include "trainer/train_memory.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

std::shared_ptr<const data::RecordEncoder> make_encoder(const TrainOptions& o,
                                                        data::Tokenizer tokenizer,
                                                        const data::TokenizerConfig& tok_config) {
  data::EncodeOptions enc;
  enc.mask_prompt = o.mask_prompt;
  enc.max_seq_length = std::size_t(o.max_seq_length);
  enc.chat_format = o.chat_format;
  return data::make_shared_encoder(std::move(tokenizer), tok_config, enc);
}

void note_truncated(const TrainData& d, int64_t max_seq_length, Progress& progress) {
  const auto& train = d.train->summary();
  if (train.truncated > 0)
    progress.note(std::to_string(train.truncated) + " of " + std::to_string(train.examples) +
                  " training examples were longer than max_seq_length " +
                  std::to_string(max_seq_length) + " and were truncated");
  if (d.valid && d.valid->summary().truncated > 0)
    progress.note(std::to_string(d.valid->summary().truncated) +
                  " validation examples were truncated");
}

// A resumed checkpoint must come from the same model, settings and data, and stop short of --iters.
void check_resumable(const LoadedCheckpoint& ckpt, const TrainOptions& o, const RunInputs& in) {
  const auto& c = ckpt.content;
  if (c.model_fingerprint != in.model_fingerprint)
    throw std::runtime_error(ckpt.dir.string() +
                             ": the checkpoint was made with another model ("
                             "config or weight shapes differ from " +
                             o.model + ")");
  if (std::string diff = identity_differences(o, c.config); !diff.empty())
    throw std::runtime_error(ckpt.dir.string() + ": incompatible settings: " + diff);
  if (c.data_fingerprint != in.data_fingerprint)
    throw std::runtime_error(ckpt.dir.string() + ": the training data (" +
                             in.data.train_file.string() +
                             ") differs from the data the checkpoint was trained on");
  if (c.progress.step >= o.iters)
    throw SettingError("iters", std::to_string(o.iters) + ", but the checkpoint " +
                                    ckpt.dir.string() + " is at step " +
                                    std::to_string(c.progress.step) +
                                    "; raise it to train further");
}

LoraConfig lora_config_from(const TrainOptions& o, int64_t model_layers) {
  LoraConfig c;
  c.rank = int(o.rank);
  if (o.alpha > 0) {
    c.alpha = o.alpha;
    c.rslora = o.rslora;
  } else {
    c.scale = float(o.scale);
  }
  c.dropout = float(o.dropout);
  c.dora = o.fine_tune_type == "dora";
  c.full = o.fine_tune_type == "full";
  c.num_layers = o.num_layers < 0 ? -1 : int(std::min<int64_t>(o.num_layers, model_layers));
  c.keys.clear();
  for (const auto& k : o.lora_keys) {
    auto p = proj_from_name(k);
    if (!p)
      throw SettingError("lora_keys", "unknown projection \"" + k +
                                          "\" (expected q_proj, k_proj, v_proj, o_proj, "
                                          "gate_proj, up_proj, down_proj, qkv_proj, "
                                          "gate_up_proj)");
    if (std::find(c.keys.begin(), c.keys.end(), *p) == c.keys.end()) c.keys.push_back(*p);
  }
  return c;
}

// Copies the trained blocks of a saved full fine-tuning into `adapter`, block by block.
void start_from_trained_blocks(LoraAdapter& adapter, const LoraAdapter& saved,
                               const fs::path& path) {
  if (!saved.config.full)
    throw SettingError("resume_adapter_file", path.string() +
                                                  " is a LoRA adapter; this run fine-tunes the "
                                                  "blocks themselves (fine_tune_type full)");
  for (TrainedBlock& b : adapter.blocks) {
    const auto it = std::find_if(saved.blocks.begin(), saved.blocks.end(),
                                 [&](const TrainedBlock& s) { return s.layer == b.layer; });
    if (it == saved.blocks.end())
      throw SettingError("resume_adapter_file", path.string() + " has no trained block " +
                                                    std::to_string(b.layer) +
                                                    " (this run trains it; check num_layers)");
    for (int t = 0; t < kNumBlockTensors; ++t)
      if (b.tensors[t].value.numel() > 0) b.tensors[t].value = it->tensors[t].value;
  }
  if (saved.blocks.size() != adapter.blocks.size())
    throw SettingError("resume_adapter_file",
                       path.string() + " trains " + std::to_string(saved.blocks.size()) +
                           " blocks, this run " + std::to_string(adapter.blocks.size()) +
                           " (check num_layers)");
}

// Copies the A/B values of a saved adapter into `adapter`, module by module.
void start_from_adapter(LoraAdapter& adapter, const fs::path& path, const Model& model) {
  LoraAdapter saved = load_adapter(path, model);
  if (adapter.config.full || saved.config.full) {
    if (!adapter.config.full)
      throw SettingError("resume_adapter_file",
                         path.string() +
                             " is a fully fine-tuned model (fine_tune_type full); "
                             "this run trains a LoRA adapter");
    start_from_trained_blocks(adapter, saved, path);
    return;
  }
  for (auto& m : adapter.modules) {
    const LoraModule* s = saved.find(m.layer, m.proj);
    const std::string name = layer_module_name(m.layer, m.proj);
    if (s == nullptr)
      throw SettingError("resume_adapter_file",
                         path.string() + " has no " + name +
                             " (this run adapts it; check num_layers and lora_keys)");
    if (s->A.value.shape != m.A.value.shape || s->B.value.shape != m.B.value.shape)
      throw std::runtime_error(path.string() + ": " + name + " has A " + s->A.value.shape_str() +
                               ", B " + s->B.value.shape_str() + " but this run's rank gives A " +
                               m.A.value.shape_str() + ", B " + m.B.value.shape_str());
    if (s->is_dora() != m.is_dora())
      throw SettingError("resume_adapter_file",
                         path.string() + " is a " + (s->is_dora() ? "DoRA" : "LoRA") +
                             " adapter; this run trains " + (m.is_dora() ? "DoRA" : "LoRA") +
                             " (fine_tune_type)");
    m.A.value = s->A.value;
    m.B.value = s->B.value;
    if (m.is_dora()) m.magnitude.value = s->magnitude.value;
  }
  if (saved.modules.size() != adapter.modules.size())
    throw SettingError("resume_adapter_file",
                       path.string() + " has " + std::to_string(saved.modules.size()) +
                           " LoRA modules, this run " + std::to_string(adapter.modules.size()) +
                           " (check num_layers and lora_keys)");
}

// The adapter a run trains: fresh from the seed, or (--resume-adapter-file without --resume)
// starting from a saved adapter's values. A resumed checkpoint's values are restored later.
LoraAdapter create_adapter(const TrainOptions& o, const RunInputs& in) {
  LoraAdapter adapter = LoraAdapter::create(
      in.model, lora_config_from(o, in.model.config.num_layers), uint64_t(o.seed));
  if (adapter.modules.empty() && adapter.blocks.empty())
    throw SettingError("lora_keys", "adapts nothing in the blocks num_layers selects");
  if (!o.resume_adapter_file.empty() && !in.resumed)
    start_from_adapter(adapter, o.resume_adapter_file, in.model);
  return adapter;
}

OptimizerConfig optimizer_config(const TrainOptions& o) {
  OptimizerConfig oc;
  oc.name = o.optimizer;
  oc.weight_decay = float(o.weight_decay);
  oc.momentum = float(o.momentum);
  return oc;
}

ScheduleConfig schedule_config(const TrainOptions& o) {
  ScheduleConfig schedule;
  schedule.type = o.lr_schedule;
  schedule.warmup_steps = o.warmup;
  schedule.warmup_init = float(o.warmup_init);
  schedule.total_steps = o.iters;
  return schedule;
}

const TrainOptions& validated(const TrainOptions& o) {
  o.validate();
  return o;
}

}  // namespace

TrainData load_train_data(const TrainOptions& o, const fs::path& model_dir, Progress& progress) {
  const auto encoder =
      make_encoder(o, load_model_tokenizer(model_dir), load_model_tokenizer_config(model_dir));

  const bool want_valid = o.val_batches != 0;
  TrainData d;
  d.train_file = o.train_file;
  fs::path valid_file = o.valid_file;
  if (!o.data.empty()) {
    auto files = data::DataFiles::in_folder(o.data, want_valid && valid_file.empty());
    if (d.train_file.empty()) d.train_file = files.train;
    if (valid_file.empty()) valid_file = files.valid;
  }
  if (want_valid && valid_file.empty())
    throw std::runtime_error(
        "no validation data: give a validation file, a data folder with valid.jsonl, or "
        "val_batches 0");
  const auto line_cap = std::size_t(o.max_line_bytes);
  d.train = stream_split(d.train_file, encoder, line_cap);
  if (want_valid) d.valid = stream_split(valid_file, encoder, line_cap);
  if (d.train->summary().trained_tokens == 0)
    throw std::runtime_error(d.train_file.string() +
                             ": no token carries loss (every token is "
                             "masked as prompt)");
  note_truncated(d, o.max_seq_length, progress);
  // --test: the test file is read and encoded now, so a missing or broken one fails before any
  // training time is spent (and before the adapter folder is written).
  if (o.test) {
    const fs::path test_file =
        o.data.empty() ? fs::path() : data::DataFiles::in_folder(o.data, false).test;
    if (test_file.empty())
      throw SettingError("test",
                         "no test.jsonl in the data folder " +
                             (o.data.empty() ? std::string("(no data folder given)") : o.data));
    d.test = stream_split(test_file, encoder, line_cap);
  }
  return d;
}

RunInputs load_run_inputs(const TrainOptions& o, Progress& progress) {
  RunInputs in;
  if (!o.resume.empty()) in.resumed = load_checkpoint(resolve_checkpoint(o.resume));
  LoadOptions load;
  load.quantize_bits = int(o.quantize);
  load.quantize_group_size = int(o.q_group_size);
  in.data = load_train_data(o, o.model, progress);
  // Refused before the model is loaded when the run cannot fit in memory.
  const int64_t longest = in.data.train->summary().longest;
  progress.note("peak memory estimate " + describe(estimate_run_memory(o, longest)) +
                " for batches of " + std::to_string(o.batch_size) + " x " +
                std::to_string(longest) + " tokens");
  if (const auto available = memory_available_to_runs()) check_run_fits(o, longest, *available);
  in.model = load_model(o.model, load);
  in.compute = compute_dtype_named(o.compute_dtype);
  if (in.compute == ComputeDType::BF16 && !uses_bf16(in.compute))
    progress.note("compute_dtype bf16: this CPU has no bf16 matmul units; running in f32");
  if (const std::string slow_blas = blas_kernels_below_cpu(); !slow_blas.empty())
    progress.note(slow_blas);
  in.model_fingerprint = model_fingerprint(in.model);
  in.data_fingerprint = in.data.train->summary().fingerprint;
  if (in.resumed) check_resumable(*in.resumed, o, in);
  return in;
}

TrainRun::TrainRun(const TrainOptions& o, Progress& progress, const ParallelOptions& parallel)
    : options(validated(o)),
      inputs(load_run_inputs(o, progress)),
      adapter(create_adapter(o, inputs)),
      optimizer(optimizer_config(o), adapter.parameters()),
      params(adapter.parameters()),
      train_plan(inputs.data.train, o.batch_size, uint64_t(o.seed)),
      schedule(schedule_config(o)),
      format(adapter_format_from_name(o.format)),
      comm(parallel.comm != nullptr ? *parallel.comm : one_process),
      exchange(params, o.grad_accumulation_steps, parallel.ordered_reduction, comm) {
  if (inputs.resumed) {
    restore_checkpoint(*inputs.resumed, adapter, optimizer);
    state = inputs.resumed->content.progress;
  }
  if (inputs.data.valid)
    valid_plan.emplace(inputs.data.valid, o.batch_size, uint64_t(o.seed), false);
}

StepSetup TrainRun::step_setup() {
  return StepSetup{model(),
                   adapter,
                   train_plan,
                   options.grad_accumulation_steps,
                   uint64_t(options.seed),
                   ForwardOptions{options.grad_checkpoint, inputs.compute}};
}

float TrainRun::learning_rate(int64_t step) const {
  return learning_rate_at(schedule, float(options.learning_rate), step - 1);
}

}  // namespace lora
