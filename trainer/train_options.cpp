#include "trainer/train_options.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "trainer/model.h"
#include "trainer/setting_error.h"

namespace lora {

namespace {

using O = TrainOptions;

std::string json_key(std::string_view flag) {
  std::string k(flag);
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}

}  // namespace

const std::vector<TrainField>& train_fields() {
  static const std::vector<TrainField> fields = {
      {"model", &O::model, "Model folder (config.json, model.safetensors, tokenizer.json)", true},
      {"data", &O::data, "Data folder with train.jsonl, valid.jsonl and optionally test.jsonl"},
      {"train-file", &O::train_file, "Training JSONL file (instead of DATA/train.jsonl)"},
      {"valid-file", &O::valid_file, "Validation JSONL file (instead of DATA/valid.jsonl)"},
      {"adapter-path", &O::adapter_path, "Folder to write the adapter, checkpoints and metrics to"},
      {"format", &O::format, "Adapter layout written: mlx (adapters.safetensors) or peft"},
      {"resume-adapter-file", &O::resume_adapter_file,
       "Start from these adapter weights (a folder or .safetensors; a new optimizer state)", true},
      {"iters", &O::iters,
       "Optimizer steps to train (each sees batch-size examples per accumulation step)"},
      {"batch-size", &O::batch_size, "Examples per batch: larger is smoother and slower per step",
       true},
      {"grad-accumulation-steps", &O::grad_accumulation_steps,
       "Batches whose gradients add up to one optimizer step", true},
      {"learning-rate", &O::learning_rate,
       "Peak learning rate of the LoRA weights (about 1e-5 for large models, 1e-3 for tiny ones)",
       true},
      {"optimizer", &O::optimizer, "adam, adamw (adam with decoupled weight decay) or sgd", true},
      {"weight-decay", &O::weight_decay, "Decoupled weight decay (adamw)", true},
      {"momentum", &O::momentum, "Momentum (sgd)", true},
      {"lr-schedule", &O::lr_schedule,
       "constant, linear or cosine: after warmup, decay to 0 at the last step", true},
      {"warmup", &O::warmup,
       "Steps of linear warmup to the peak learning rate (steadies the first steps)", true},
      {"warmup-init", &O::warmup_init, "Warmup starts at this fraction of the learning rate", true},
      {"grad-clip", &O::grad_clip, "Clip the global gradient norm to this (0: off)", true},
      {"seed", &O::seed, "Seed for the LoRA init, the data order and dropout: same seed, same run",
       true},
      {"grad-checkpoint", &O::grad_checkpoint,
       "Recompute block activations in backward: less memory, about a third more time"},
      {"compute-dtype", &O::compute_dtype,
       "Frozen base matmuls in f32, or bf16 on CPUs with bf16 units (AMX, AVX512-BF16; f32 "
       "elsewhere). LoRA weights, gradients and optimizer state stay f32"},
      {"mask-prompt", &O::mask_prompt, "Loss only on completions and assistant turns", true},
      {"max-seq-length", &O::max_seq_length, "Longer examples are truncated to this many tokens",
       true},
      {"chat-format", &O::chat_format,
       "How chats are laid out: template (the model's chat_template) or llama2", true},
      {"max-line-bytes", &O::max_line_bytes, "Longest JSONL line accepted"},
      {"fine-tune-type", &O::fine_tune_type,
       "lora, dora (weight-decomposed: each module also trains a magnitude per output), or full "
       "(the blocks' own weights and norms train in f32; a float base only)",
       true},
      {"num-layers", &O::num_layers,
       "Adapt the last N transformer blocks (-1: all); fewer is faster and changes less", true},
      {"rank", &O::rank,
       "LoRA rank r: the update B A has B [out, r] and A [r, in]; more capacity, more weights",
       true},
      {"scale", &O::scale,
       "The update added to each linear is scale * B A (mlx-lm's lora_parameters.scale)", true},
      {"alpha", &O::alpha, "LoRA alpha: when set, scale = alpha / rank", true},
      {"rslora", &O::rslora, "Rank-stabilized scale alpha / sqrt(rank)", true},
      {"dropout", &O::dropout,
       "Dropout on the LoRA branch's input while training (0: off); fights overfitting", true},
      {"lora-keys", &O::lora_keys,
       "Projections to adapt (q_proj,k_proj,v_proj,o_proj,gate_proj,...; Phi-3: qkv_proj, "
       "gate_up_proj)",
       true},
      {"quantize", &O::quantize,
       "Quantize the frozen base at load to 2, 3, 4, 5, 6 or 8 bits (0: as stored): less memory",
       true},
      {"q-group-size", &O::q_group_size, "Weights per quantization group (32, 64 or 128)", true},
      {"steps-per-report", &O::steps_per_report, "Log the training loss every N steps"},
      {"steps-per-eval", &O::steps_per_eval, "Validation loss every N steps (0: only at the end)"},
      {"val-batches", &O::val_batches, "Validation batches per evaluation (-1: all; 0: none)"},
      {"save-every", &O::save_every, "Checkpoint every N steps (0: never)"},
      {"keep-checkpoints", &O::keep_checkpoints, "Checkpoints kept (the oldest are removed)"},
      {"test", &O::test, "Evaluate on the test set after training"},
      {"test-batches", &O::test_batches, "Test batches of the test evaluation (-1: all)"},
  };
  return fields;
}

nlohmann::ordered_json TrainOptions::to_json() const {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const auto& f : train_fields()) {
    std::visit([&](auto member) { j[json_key(f.flag)] = this->*member; }, f.member);
  }
  return j;
}

void TrainOptions::validate() const {
  auto at_least = [](const char* setting, int64_t value, int64_t least) {
    if (value < least)
      throw SettingError(
          setting, "must be at least " + std::to_string(least) + ", got " + std::to_string(value));
  };
  auto one_of = [](const char* setting, const std::string& v,
                   std::initializer_list<const char*> ok) {
    std::string list;
    for (const char* o : ok) {
      if (v == o) return;
      list += std::string(list.empty() ? "" : ", ") + o;
    }
    throw SettingError(setting, "\"" + v + "\" is not one of: " + list);
  };
  if (model.empty()) throw SettingError("model", "is required (a model folder)");
  if (data.empty() && train_file.empty())
    throw SettingError("data", "no training data: give a data folder or a training file");
  at_least("iters", iters, 1);
  at_least("batch_size", batch_size, 1);
  at_least("grad_accumulation_steps", grad_accumulation_steps, 1);
  if (!(learning_rate >= 0) || !std::isfinite(learning_rate))
    throw SettingError("learning_rate", "must be a finite number >= 0");
  at_least("max_seq_length", max_seq_length, 2);
  at_least("rank", rank, 1);
  if (!(dropout >= 0 && dropout < 1)) throw SettingError("dropout", "must be in [0, 1)");
  if (num_layers == 0 || num_layers < -1)
    throw SettingError("num_layers", "must be positive or -1 (all)");
  at_least("warmup", warmup, 0);
  if (!(grad_clip >= 0)) throw SettingError("grad_clip", "must be >= 0");
  at_least("steps_per_report", steps_per_report, 1);
  at_least("steps_per_eval", steps_per_eval, 0);
  at_least("save_every", save_every, 0);
  at_least("keep_checkpoints", keep_checkpoints, 1);
  at_least("max_line_bytes", max_line_bytes, 16);
  if (lora_keys.empty()) throw SettingError("lora_keys", "needs at least one projection");
  if (quantize != 0) check_quantization(int(quantize), int(q_group_size));
  one_of("optimizer", optimizer, {"adam", "adamw", "sgd"});
  one_of("fine_tune_type", fine_tune_type, {"lora", "dora", "full"});
  if (fine_tune_type == "full" && quantize != 0)
    throw SettingError(
        "quantize",
        "full fine-tuning trains the base weights in f32 and cannot quantize them "
        "at load; leave quantize at 0, or train a LoRA adapter on the quantized base");
  if (fine_tune_type == "full" && format == "peft")
    throw SettingError("format",
                       "a fully fine-tuned model is saved as mlx-lm saves it (adapters.safetensors "
                       "with fine_tune_type full); PEFT has no such layout");
  one_of("lr_schedule", lr_schedule, {"constant", "linear", "cosine"});
  one_of("format", format, {"mlx", "peft"});
  one_of("chat_format", chat_format, {"template", "llama2"});
  one_of("compute_dtype", compute_dtype, {"f32", "bf16"});
}

std::string identity_differences(const TrainOptions& options, const nlohmann::json& saved) {
  const nlohmann::ordered_json now = options.to_json();
  std::string out;
  for (const auto& f : train_fields()) {
    const std::string key = json_key(f.flag);
    bool identity = f.identity;
    // The decay horizon is --iters: extending a decaying schedule would change past steps.
    if (key == "iters") identity = options.lr_schedule != "constant";
    if (!identity) continue;
    auto it = saved.find(key);
    const std::string here = now[key].dump();
    const std::string there = it == saved.end() ? "(absent)" : it->dump();
    if (here != there)
      out += std::string(out.empty() ? "" : "; ") + key + " is " + here + " here but " + there +
             " in the checkpoint";
  }
  return out;
}

}  // namespace lora
