#include "trainer/train_options.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <stdexcept>

namespace lora {

namespace {

using O = TrainOptions;

std::string json_key(std::string_view flag) {
  std::string k(flag);
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}

std::string flag_name(std::string_view key) {
  std::string k(key);
  std::replace(k.begin(), k.end(), '_', '-');
  return k;
}

}  // namespace

const std::vector<TrainField>& train_fields() {
  static const std::vector<TrainField> fields = {
      {"model", &O::model, "Model folder (config.json, model.safetensors, tokenizer.json)", true},
      {"data", &O::data, "Data folder with train.jsonl, valid.jsonl and optionally test.jsonl"},
      {"train", &O::train_file, "Training JSONL file (instead of DATA/train.jsonl)"},
      {"valid", &O::valid_file, "Validation JSONL file (instead of DATA/valid.jsonl)"},
      {"adapter-path", &O::adapter_path, "Folder to write the adapter, checkpoints and metrics to"},
      {"format", &O::format, "Adapter layout written: mlx (adapters.safetensors) or peft"},
      {"resume-adapter-file", &O::resume_adapter_file,
       "Start from these adapter weights (a folder or .safetensors; a new optimizer state)", true},
      {"iters", &O::iters, "Optimizer steps to train"},
      {"batch-size", &O::batch_size, "Examples per batch", true},
      {"grad-accumulation-steps", &O::grad_accumulation_steps,
       "Batches whose gradients add up to one optimizer step", true},
      {"learning-rate", &O::learning_rate, "Peak learning rate", true},
      {"optimizer", &O::optimizer, "adam, adamw or sgd", true},
      {"weight-decay", &O::weight_decay, "Decoupled weight decay (adamw)", true},
      {"momentum", &O::momentum, "Momentum (sgd)", true},
      {"lr-schedule", &O::lr_schedule, "constant, linear or cosine (decaying over --iters)", true},
      {"warmup", &O::warmup, "Linear warmup steps", true},
      {"warmup-init", &O::warmup_init, "Warmup starts at this fraction of the learning rate", true},
      {"grad-clip", &O::grad_clip, "Clip the global gradient norm to this (0: off)", true},
      {"seed", &O::seed, "Seed for LoRA init, data order and dropout", true},
      {"grad-checkpoint", &O::grad_checkpoint,
       "Recompute block activations in backward (less memory)"},
      {"compute-dtype", &O::compute_dtype,
       "Frozen base matmuls in f32, or bf16 on CPUs with bf16 units (AMX, AVX512-BF16; f32 "
       "elsewhere). LoRA weights, gradients and optimizer state stay f32"},
      {"mask-prompt", &O::mask_prompt, "Loss only on completions and assistant turns", true},
      {"max-seq-length", &O::max_seq_length, "Longer examples are truncated to this many tokens",
       true},
      {"chat-format", &O::chat_format,
       "How chats are laid out: template (the model's chat_template) or llama2", true},
      {"max-line-bytes", &O::max_line_bytes, "Longest JSONL line accepted"},
      {"num-layers", &O::num_layers, "Adapt the last N blocks (-1: all)", true},
      {"rank", &O::rank, "LoRA rank", true},
      {"scale", &O::scale, "LoRA scale (mlx-lm's lora_parameters.scale)", true},
      {"alpha", &O::alpha, "LoRA alpha: when set, scale = alpha / rank", true},
      {"rslora", &O::rslora, "Rank-stabilized scale alpha / sqrt(rank)", true},
      {"dropout", &O::dropout, "LoRA dropout probability", true},
      {"lora-keys", &O::lora_keys,
       "Projections to adapt (q_proj,k_proj,v_proj,o_proj,gate_proj,...)", true},
      {"quantize", &O::quantize, "Quantize the frozen base at load to 4 or 8 bits (0: as stored)",
       true},
      {"q-group-size", &O::q_group_size, "Group size for --quantize", true},
      {"steps-per-report", &O::steps_per_report, "Log the training loss every N steps"},
      {"steps-per-eval", &O::steps_per_eval, "Validation loss every N steps (0: only at the end)"},
      {"val-batches", &O::val_batches, "Validation batches per evaluation (-1: all; 0: none)"},
      {"save-every", &O::save_every, "Checkpoint every N steps (0: never)"},
      {"keep-checkpoints", &O::keep_checkpoints, "Checkpoints kept (the oldest are removed)"},
      {"test", &O::test, "Evaluate on the test set after training"},
      {"test-batches", &O::test_batches, "Test batches for --test (-1: all)"},
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
  auto fail = [](const std::string& msg) { throw std::runtime_error(msg); };
  auto one_of = [&](const char* flag, const std::string& v, std::initializer_list<const char*> ok) {
    for (const char* o : ok)
      if (v == o) return;
    std::string list;
    for (const char* o : ok) list += std::string(list.empty() ? "" : ", ") + o;
    fail(std::string("--") + flag + " \"" + v + "\" is not one of: " + list);
  };
  if (model.empty()) fail("--model is required (a model folder)");
  if (data.empty() && train_file.empty()) fail("--data (a folder) or --train FILE is required");
  if (iters < 1) fail("--iters must be at least 1");
  if (batch_size < 1) fail("--batch-size must be at least 1");
  if (grad_accumulation_steps < 1) fail("--grad-accumulation-steps must be at least 1");
  if (!(learning_rate >= 0) || !std::isfinite(learning_rate)) fail("--learning-rate must be >= 0");
  if (max_seq_length < 2) fail("--max-seq-length must be at least 2");
  if (rank < 1) fail("--rank must be at least 1");
  if (!(dropout >= 0 && dropout < 1)) fail("--dropout must be in [0, 1)");
  if (num_layers == 0 || num_layers < -1) fail("--num-layers must be positive or -1 (all)");
  if (warmup < 0) fail("--warmup must be >= 0");
  if (grad_clip < 0) fail("--grad-clip must be >= 0");
  if (steps_per_report < 1) fail("--steps-per-report must be at least 1");
  if (steps_per_eval < 0 || save_every < 0) fail("--steps-per-eval and --save-every must be >= 0");
  if (keep_checkpoints < 1) fail("--keep-checkpoints must be at least 1");
  if (max_line_bytes < 16) fail("--max-line-bytes is too small");
  if (lora_keys.empty()) fail("--lora-keys needs at least one projection");
  if (quantize != 0 && quantize != 4 && quantize != 8) fail("--quantize must be 0, 4 or 8");
  one_of("optimizer", optimizer, {"adam", "adamw", "sgd"});
  one_of("lr-schedule", lr_schedule, {"constant", "linear", "cosine"});
  one_of("format", format, {"mlx", "peft"});
  one_of("chat-format", chat_format, {"template", "llama2"});
  one_of("compute-dtype", compute_dtype, {"f32", "bf16"});
}

void add_train_flags(CLI::App& cmd, TrainOptions& options, TrainFlags& flags) {
  for (const auto& f : train_fields()) {
    const std::string name = std::string("--") + f.flag;
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(options.*member)>;
          if constexpr (std::is_same_v<T, bool>) {
            cmd.add_flag(name, options.*member, f.help);
          } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
            cmd.add_option(name, options.*member, f.help)->delimiter(',')->capture_default_str();
          } else {
            // Given twice (e.g. by a script that appends flags): the last one wins.
            cmd.add_option(name, options.*member, f.help)
                ->capture_default_str()
                ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
          }
        },
        f.member);
  }
  cmd.add_option("--resume", options.resume,
                 "Continue a run from a checkpoint folder, or the latest checkpoint of an adapter "
                 "folder; flags not given are taken from the checkpoint");
  cmd.add_flag("--print-config", flags.print_config,
               "Print the resolved settings as JSON (usable as --config) and exit");
  cmd.add_option("--config", flags.config_file,
                 "Settings file (TOML or JSON; keys are the flags' long names); the command line "
                 "overrides it");
}

void apply_config_file(CLI::App& cmd, const std::string& path) {
  if (!std::filesystem::is_regular_file(path))
    throw std::runtime_error(path + ": --config file not found");
  std::vector<CLI::ConfigItem> items;
  try {
    items = make_train_config_reader()->from_file(path);
  } catch (const CLI::Error& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  for (const auto& item : items) {
    if (item.name == "++" || item.name == "--") continue;
    const std::string key = item.fullname();
    CLI::Option* opt = item.parents.empty() ? cmd.get_option_no_throw("--" + item.name) : nullptr;
    if (opt == nullptr || item.name == "config" || item.name == "print-config")
      throw std::runtime_error(path + ": unknown setting \"" + key + "\" (see lora train --help)");
    if (opt->count() > 0) continue;  // given on the command line
    try {
      opt->add_result(item.inputs);
      opt->run_callback();
    } catch (const CLI::Error& e) {
      throw std::runtime_error(path + ": setting \"" + key + "\": " + e.what());
    }
  }
}

void fill_unset_from(const CLI::App& cmd, TrainOptions& options, const nlohmann::json& saved) {
  for (const auto& f : train_fields()) {
    const CLI::Option* opt = cmd.get_option_no_throw(std::string("--") + f.flag);
    if (opt != nullptr && opt->count() > 0) continue;
    auto it = saved.find(json_key(f.flag));
    if (it == saved.end()) continue;
    std::visit(
        [&](auto member) {
          using T = std::remove_reference_t<decltype(options.*member)>;
          options.*member = it->template get<T>();
        },
        f.member);
  }
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
      out += std::string(out.empty() ? "" : "; ") + "--" + f.flag + " is " + here + " here but " +
             there + " in the checkpoint";
  }
  return out;
}

namespace {

// TOML (CLI11's own reader) or JSON, with keys normalized to flag names: '_' -> '-', and
// mlx-lm's lora_parameters section flattened (its "keys" is --lora-keys).
class TrainConfigReader : public CLI::ConfigTOML {
 public:
  std::vector<CLI::ConfigItem> from_config(std::istream& input) const override {
    std::string text((std::istreambuf_iterator<char>(input)), std::istreambuf_iterator<char>());
    auto first = text.find_first_not_of(" \t\r\n");
    std::vector<CLI::ConfigItem> items;
    if (first != std::string::npos && text[first] == '{') {
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(text);
      } catch (const nlohmann::json::parse_error& e) {
        throw CLI::ConversionError(std::string("config file: invalid JSON: ") + e.what());
      }
      add_json(j, {}, items);
    } else {
      std::istringstream in(text);
      items = CLI::ConfigTOML::from_config(in);
    }
    std::vector<CLI::ConfigItem> out;
    for (auto& item : items) {
      const bool lora_section = !item.parents.empty() && item.parents.back() == "lora_parameters";
      if (lora_section) {
        if (item.name == "++" || item.name == "--") continue;  // section markers
        item.parents.clear();
        if (item.name == "keys") item.name = "lora-keys";
      }
      item.name = flag_name(item.name);
      out.push_back(std::move(item));
    }
    return out;
  }

 private:
  static void add_json(const nlohmann::json& j, std::vector<std::string> parents,
                       std::vector<CLI::ConfigItem>& items) {
    if (!j.is_object())
      throw CLI::ConversionError("config file: expected a JSON object of settings");
    for (const auto& [key, value] : j.items()) {
      if (value.is_null()) continue;
      if (value.is_object()) {
        auto p = parents;
        p.push_back(key);
        add_json(value, p, items);
        continue;
      }
      CLI::ConfigItem item;
      item.parents = parents;
      item.name = key;
      if (value.is_array()) {
        for (const auto& v : value)
          item.inputs.push_back(v.is_string() ? v.get<std::string>() : v.dump());
      } else {
        item.inputs.push_back(value.is_string() ? value.get<std::string>() : value.dump());
      }
      items.push_back(std::move(item));
    }
  }
};

}  // namespace

std::shared_ptr<CLI::Config> make_train_config_reader() {
  return std::make_shared<TrainConfigReader>();
}

}  // namespace lora
