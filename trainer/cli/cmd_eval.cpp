// `lora eval`: loss and perplexity of a model, with an adapter or without, on a data split.
#include <cstdio>
#include <memory>
#include <stdexcept>

#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"
#include "trainer/evaluate.h"
#include "trainer/gguf_tokenizer.h"
#include "trainer/io/adapter_io.h"

namespace lora::cli {

namespace {

struct EvalOptions {
  std::string model, adapter_path, data, split = "test";
  bool no_adapter = false;
  bool mask_prompt = false;
  int64_t batch_size = 4;
  int64_t test_batches = -1;
  int64_t max_seq_length = 2048;
  int64_t max_line_bytes = 64ll << 20;
  std::string chat_format = "template";
  int quantize = 0;
  int q_group_size = 64;
};

void run_eval(const EvalOptions& o, const GlobalOptions& global) {
  if (o.adapter_path.empty() && !o.no_adapter)
    throw std::runtime_error("--adapter-path is required (or --no-adapter for the base alone)");
  if (o.batch_size < 1) throw std::runtime_error("--batch-size must be at least 1");
  namespace fs = std::filesystem;
  fs::path file = o.data;
  if (fs::is_directory(file)) {
    file /= o.split + ".jsonl";
    if (!fs::exists(file))
      throw std::runtime_error(file.string() + ": file not found (--split " + o.split + ")");
  }
  LoadOptions load;
  load.quantize_bits = o.quantize;
  load.quantize_group_size = o.q_group_size;
  const Model model = load_model(o.model, load);
  data::EncodeOptions enc;
  enc.mask_prompt = o.mask_prompt;
  enc.max_seq_length = std::size_t(o.max_seq_length);
  enc.chat_format = o.chat_format;
  const auto encoder = data::make_shared_encoder(load_model_tokenizer(o.model),
                                                 load_model_tokenizer_config(o.model), enc);
  const data::BatchPlan plan(stream_split(file, encoder, std::size_t(o.max_line_bytes)),
                             o.batch_size, 0, /*shuffle=*/false);

  std::optional<LoraAdapter> adapter;
  AdapterStack stack;
  if (!o.no_adapter) {
    adapter = load_adapter(o.adapter_path, model);
    stack.adapters = {&*adapter};
  }
  const EvalResult r = evaluate(model, stack, plan, o.test_batches);
  if (global.json) {
    nlohmann::ordered_json j = {{"type", "eval"},          {"split", o.split},
                                {"loss", r.loss},          {"perplexity", r.perplexity()},
                                {"tokens", r.tokens},      {"batches", r.batches},
                                {"adapter", !o.no_adapter}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s loss %.4f, perplexity %.3f (%lld tokens in %lld batches, %s)\n",
                o.split.c_str(), r.loss, r.perplexity(), static_cast<long long>(r.tokens),
                static_cast<long long>(r.batches),
                o.no_adapter ? "base model alone" : ("adapter " + o.adapter_path).c_str());
  }
}

}  // namespace

void add_eval(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "eval", "Loss and perplexity on a data split, with an adapter or the base alone");
  auto o = std::make_shared<EvalOptions>();
  cmd->add_option("--model", o->model, "Model folder or GGUF file")->required();
  cmd->add_option("--adapter-path", o->adapter_path, "Adapter folder (MLX-LM or PEFT)");
  cmd->add_flag("--no-adapter", o->no_adapter, "Evaluate the base model alone");
  cmd->add_option("--data", o->data, "Data folder (or a JSONL file)")->required();
  cmd->add_option("--split", o->split, "Which file of the data folder: test, valid or train")
      ->capture_default_str();
  cmd->add_option("--batch-size", o->batch_size, "Examples per batch")->capture_default_str();
  cmd->add_option("--test-batches", o->test_batches, "Batches to score (-1: all)")
      ->capture_default_str();
  cmd->add_option("--max-seq-length", o->max_seq_length, "Longer examples are truncated")
      ->capture_default_str();
  cmd->add_flag("--mask-prompt", o->mask_prompt, "Score only completions and assistant turns");
  cmd->add_option("--chat-format", o->chat_format, "template or llama2")->capture_default_str();
  cmd->add_option("--max-line-bytes", o->max_line_bytes, "Longest JSONL line accepted")
      ->capture_default_str();
  add_quantize_flags(*cmd, o->quantize, o->q_group_size,
                     "Quantize the frozen base at load to this many bits (0: as stored)");
  cmd->callback([o, &global] { run_eval(*o, global); });
}

}  // namespace lora::cli
