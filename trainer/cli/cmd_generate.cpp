// `lora generate`: text from a model (optionally with LoRA adapters applied unmerged).
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"
#include "trainer/generate.h"
#include "trainer/gguf_tokenizer.h"
#include "trainer/io/adapter_io.h"

namespace lora::cli {

namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  int64_t max_tokens = 100;
  float temp = 0.0f;
  float top_p = 1.0f;
  uint64_t seed = 0;
  int quantize = 0;
  int q_group_size = 64;
  std::vector<std::string> adapter_paths;
  std::vector<double> adapter_scales;
  bool no_adapter = false;
  bool stop_on_bos = false;
};

void run_generate(const GenerateFlags& f, const GlobalOptions& global) {
  LoadOptions load;
  load.quantize_bits = f.quantize;
  load.quantize_group_size = f.q_group_size;
  const Model model = load_model(f.model, load);
  const auto tokenizer = load_model_tokenizer(f.model);

  const std::vector<double> scales = adapter_scales(f.adapter_scales, f.adapter_paths.size());
  std::vector<LoraAdapter> adapters;
  for (std::size_t i = 0; i < f.adapter_paths.size(); ++i) {
    adapters.push_back(load_adapter(f.adapter_paths[i], model));
    adapters.back().strength = float(scales[i]);
    adapters.back().enabled = !f.no_adapter;  // loaded and checked, but the base runs alone
  }
  AdapterStack stack;
  for (auto& a : adapters) stack.adapters.push_back(&a);

  const std::vector<int32_t> prompt = tokenizer.encode(f.prompt, /*add_special_tokens=*/true);
  if (prompt.empty())
    throw std::runtime_error(
        "the prompt encodes to no tokens and the tokenizer adds no BOS: give "
        "--prompt TEXT");
  GenerateOptions options;
  options.max_tokens = f.max_tokens;
  options.sampling = {f.temp, f.top_p, f.seed};
  for (int64_t id : model.config.eos_token_ids)
    options.stop_ids.push_back(static_cast<int32_t>(id));
  if (f.stop_on_bos && model.config.bos_token_id >= 0)
    options.stop_ids.push_back(static_cast<int32_t>(model.config.bos_token_id));

  StreamDecoder stream(tokenizer, prompt);
  if (!global.json) std::fputs(stream.prefix_text().c_str(), stdout);
  auto on_token = [&](int32_t id) {
    const std::string piece = stream.push(id);
    if (global.json) return;
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  const GenerateResult r = generate(model, stack, prompt, options, on_token);
  const double prompt_tps = r.prompt_seconds > 0 ? double(prompt.size()) / r.prompt_seconds : 0;
  const double gen_tps = r.generate_seconds > 0 ? double(r.tokens.size()) / r.generate_seconds : 0;
  if (global.json) {
    std::string json_text = tokenizer.decode(r.tokens, true);
    nlohmann::ordered_json out = {{"prompt", f.prompt},
                                  {"text", json_text},
                                  {"tokens", r.tokens},
                                  {"prompt_tokens", prompt.size()},
                                  {"generated_tokens", r.tokens.size()},
                                  {"stop_reason", r.stop_reason},
                                  {"prompt_tokens_per_s", prompt_tps},
                                  {"tokens_per_s", gen_tps}};
    std::printf("%s\n", out.dump().c_str());
    return;
  }
  const std::string rest = stream.finish();
  std::printf("%s\n", rest.c_str());
  // The text is complete on stdout before the statistics reach stderr: with both on one
  // terminal or pipe, the statistics are the line after the text, not a cut through it.
  std::fflush(stdout);
  if (!global.quiet)
    std::fprintf(stderr,
                 "prompt: %zu tokens, %.1f tokens/s; generated: %zu tokens, %.1f tokens/s (%s)\n",
                 prompt.size(), prompt_tps, r.tokens.size(), gen_tps, r.stop_reason.c_str());
}

}  // namespace

void add_generate(CLI::App& app, const GlobalOptions& global) {
  auto* cmd =
      app.add_subcommand("generate", "Generate text from a model, optionally with adapters");
  auto f = std::make_shared<GenerateFlags>();
  cmd->add_option("--model", f->model,
                  "Model folder (config.json, safetensors, tokenizer.json) or GGUF file")
      ->required();
  cmd->add_option("--prompt", f->prompt, "Prompt text (empty: start from BOS)");
  cmd->add_option("--max-tokens", f->max_tokens, "Most tokens to generate")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--temp", f->temp, "Sampling temperature (0 = greedy)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--top-p", f->top_p, "Nucleus sampling mass, in (0, 1]")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  cmd->add_option("--seed", f->seed, "Random seed for sampling")->capture_default_str();
  add_quantize_flags(*cmd, f->quantize, f->q_group_size,
                     "Quantize float linears at load to this many bits (MLX affine; 0: as stored)");
  cmd->add_option("--adapter-path", f->adapter_paths,
                  "Adapter folder (MLX-LM or PEFT); repeatable");
  add_adapter_scale_flag(*cmd, f->adapter_scales);
  cmd->add_flag("--no-adapter", f->no_adapter, "Load the adapters but run the base model alone");
  cmd->add_flag("--stop-on-bos", f->stop_on_bos,
                "Also stop at BOS (llama2.c models separate stories with it)");
  cmd->callback([f, &global] { run_generate(*f, global); });
}

}  // namespace lora::cli
