// `lora generate`: text from a model (optionally with LoRA adapters applied unmerged), once from a
// prompt or, with --chat, as a conversation read turn by turn from stdin.
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "trainer/chat_prompt.h"
#include "trainer/cli/commands.h"
#include "trainer/cli/flag_values.h"
#include "trainer/gguf_tokenizer.h"
#include "trainer/io/adapter_io.h"
#include "trainer/text_stream.h"

namespace lora::cli {

namespace {

struct GenerateFlags {
  std::string model;
  std::string prompt;
  int64_t max_tokens = 100;
  KVCacheType kv_cache = KVCacheType::F32;
  GemvActivations decode_activations = GenerateOptions{}.decode_activations;
  SamplingOptions sampling;
  std::vector<std::string> stop;
  int quantize = 0;
  int q_group_size = 64;
  std::vector<std::string> adapter_paths;
  std::vector<double> adapter_scales;
  bool no_adapter = false;
  bool stop_on_bos = false;
  bool chat = false;
  std::string system_prompt;
};

void add_sampling_options(CLI::App& cmd, SamplingOptions& s) {
  cmd.add_option("--temp", s.temperature, "Sampling temperature (0 = greedy)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--top-p", s.top_p, "Nucleus sampling mass, in (0, 1]")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  cmd.add_option("--top-k", s.top_k, "Sample among the k most likely tokens (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd.add_option("--min-p", s.min_p, "Drop tokens below this fraction of the top probability")
      ->check(CLI::Range(0.0f, 1.0f))
      ->capture_default_str();
  cmd.add_option("--repetition-penalty", s.repetition_penalty,
                 "Divide the logits of tokens already seen by this (1 = off)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd.add_option("--seed", s.seed, "Random seed for sampling")->capture_default_str();
}

struct Reply {
  std::vector<int32_t> tokens;
  std::string text;
  std::string stop_reason;
  double prompt_tps = 0, gen_tps = 0;
};

// Generates from `prompt`, writing the text to stdout as it comes unless JSON output is on.
Reply generate_reply(const Model& model, const AdapterStack& stack,
                     const data::Tokenizer& tokenizer, const std::vector<int32_t>& prompt,
                     const GenerateOptions& options, const std::vector<std::string>& stop,
                     bool print) {
  Decoding decoding(model, stack, prompt, options);
  TextStream stream(tokenizer, prompt, stop);
  Reply reply;
  auto show = [&](const std::string& piece) {
    reply.text += piece;
    if (!print) return;
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  };
  while (const auto id = decoding.next()) {
    show(stream.push(*id));
    if (stream.stopped()) decoding.finish("stop_string");
  }
  show(stream.finish());
  reply.tokens.assign(decoding.tokens().begin(), decoding.tokens().end());
  reply.stop_reason = decoding.stop_reason();
  if (decoding.prompt_seconds() > 0) reply.prompt_tps = prompt.size() / decoding.prompt_seconds();
  if (decoding.generate_seconds() > 0)
    reply.gen_tps = reply.tokens.size() / decoding.generate_seconds();
  return reply;
}

void report(const Reply& r, std::size_t prompt_tokens, const std::string& prompt_text,
            const GlobalOptions& global) {
  if (global.json) {
    nlohmann::ordered_json out = {{"prompt", prompt_text},
                                  {"text", r.text},
                                  {"tokens", r.tokens},
                                  {"prompt_tokens", prompt_tokens},
                                  {"generated_tokens", r.tokens.size()},
                                  {"stop_reason", r.stop_reason},
                                  {"prompt_tokens_per_s", r.prompt_tps},
                                  {"tokens_per_s", r.gen_tps}};
    std::printf("%s\n", out.dump().c_str());
    std::fflush(stdout);
    return;
  }
  std::printf("\n");
  // The text is complete on stdout before the statistics reach stderr: with both on one
  // terminal or pipe, the statistics are the line after the text, not a cut through it.
  std::fflush(stdout);
  if (!global.quiet)
    std::fprintf(stderr,
                 "prompt: %zu tokens, %.1f tokens/s; generated: %zu tokens, %.1f tokens/s (%s)\n",
                 prompt_tokens, r.prompt_tps, r.tokens.size(), r.gen_tps, r.stop_reason.c_str());
}

// Each line on stdin is a user turn; the conversation so far is the prompt of every reply.
void run_chat(const GenerateFlags& f, const GlobalOptions& global, const Model& model,
              const AdapterStack& stack, const data::Tokenizer& tokenizer,
              const GenerateOptions& options) {
  const ChatPrompt chat = ChatPrompt::load(f.model);
  std::vector<std::string> stop = f.stop;
  for (auto& s : chat.stop_strings()) stop.push_back(s);
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  if (!f.system_prompt.empty())
    messages.push_back({{"role", "system"}, {"content", f.system_prompt}});
  const bool terminal = isatty(STDIN_FILENO);
  std::string line = f.prompt;
  bool have_turn = !line.empty();
  while (true) {
    if (!have_turn) {
      if (terminal) std::fputs(">>> ", stderr);
      if (!std::getline(std::cin, line)) break;
      if (line.empty()) continue;
    }
    have_turn = false;
    messages.push_back({{"role", "user"}, {"content", line}});
    const std::vector<int32_t> prompt = chat.encode(tokenizer, messages);
    const Reply r = generate_reply(model, stack, tokenizer, prompt, options, stop, !global.json);
    report(r, prompt.size(), line, global);
    messages.push_back({{"role", "assistant"}, {"content", r.text}});
  }
}

void run_generate(const GenerateFlags& f, const GlobalOptions& global) {
  validate(f.sampling);
  LoadOptions load;
  load.quantize_bits = f.quantize;
  load.quantize_group_size = f.q_group_size;
  load.int8_decode_layout = f.decode_activations == GemvActivations::Int8;
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

  GenerateOptions options;
  options.max_tokens = f.max_tokens;
  options.kv_cache = f.kv_cache;
  options.decode_activations = f.decode_activations;
  options.sampling = f.sampling;
  for (int64_t id : model.config.eos_token_ids)
    options.stop_ids.push_back(static_cast<int32_t>(id));
  if (f.stop_on_bos && model.config.bos_token_id >= 0)
    options.stop_ids.push_back(static_cast<int32_t>(model.config.bos_token_id));
  if (f.chat) return run_chat(f, global, model, stack, tokenizer, options);

  const std::vector<int32_t> prompt = tokenizer.encode(f.prompt, /*add_special_tokens=*/true);
  if (prompt.empty())
    throw std::runtime_error(
        "the prompt encodes to no tokens and the tokenizer adds no BOS: give "
        "--prompt TEXT");
  if (!global.json) std::fputs(StreamDecoder(tokenizer, prompt).prefix_text().c_str(), stdout);
  const Reply r = generate_reply(model, stack, tokenizer, prompt, options, f.stop, !global.json);
  report(r, prompt.size(), f.prompt, global);
}

}  // namespace

void add_generate(CLI::App& app, const GlobalOptions& global) {
  auto* cmd =
      app.add_subcommand("generate", "Generate text from a model, optionally with adapters");
  auto f = std::make_shared<GenerateFlags>();
  cmd->add_option("--model", f->model,
                  "Model folder (config.json, safetensors, tokenizer.json) or GGUF file")
      ->required();
  cmd->add_option("--prompt", f->prompt,
                  "Prompt text (empty: start from BOS); with --chat, the first user turn");
  cmd->add_option("--max-tokens", f->max_tokens, "Most tokens to generate")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  add_sampling_options(*cmd, f->sampling);
  add_kv_cache_flag(*cmd, f->kv_cache);
  add_decode_activations_flag(*cmd, f->decode_activations);
  cmd->add_option("--stop", f->stop, "Stop when the text contains this string (repeatable)");
  add_quantize_flags(*cmd, f->quantize, f->q_group_size,
                     "Quantize float linears at load to this many bits (MLX affine; 0: as stored)");
  cmd->add_option("--adapter-path", f->adapter_paths,
                  "Adapter folder (MLX-LM or PEFT); repeatable");
  add_adapter_scale_flag(*cmd, f->adapter_scales);
  cmd->add_flag("--no-adapter", f->no_adapter, "Load the adapters but run the base model alone");
  cmd->add_flag("--stop-on-bos", f->stop_on_bos,
                "Also stop at BOS (llama2.c models separate stories with it)");
  cmd->add_flag("--chat", f->chat,
                "Chat: each stdin line is a user turn, answered with the model's chat template");
  cmd->add_option("--system-prompt", f->system_prompt, "With --chat: the system message");
  cmd->callback([f, &global] { run_generate(*f, global); });
}

}  // namespace lora::cli
