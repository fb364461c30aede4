#include "trainer/gguf_arch.h"

#include <array>
#include <utility>

namespace lora {

namespace {

// (Hugging Face model_type, GGUF architecture); the first entry of an architecture is the
// model_type it is read back as.
constexpr std::array<std::pair<std::string_view, std::string_view>, 9> kArchitectures{{
    {"llama", "llama"},
    {"mistral", "llama"},
    {"qwen2", "qwen2"},
    {"qwen3", "qwen3"},
    {"gemma2", "gemma2"},
    {"gemma3_text", "gemma3"},
    {"gemma3", "gemma3"},
    {"phi3", "phi3"},
    {"smollm3", "smollm3"},
}};

}  // namespace

std::optional<std::string> gguf_architecture_of(const std::string& model_type) {
  for (const auto& [type, arch] : kArchitectures)
    if (type == model_type) return std::string(arch);
  return std::nullopt;
}

std::optional<std::string> model_type_of_gguf(const std::string& architecture) {
  for (const auto& [type, arch] : kArchitectures)
    if (arch == architecture) return std::string(type);
  return std::nullopt;
}

std::string hf_architecture_of(const std::string& model_type) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 8> kNames{{
      {"llama", "LlamaForCausalLM"},
      {"mistral", "MistralForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},
      {"qwen3", "Qwen3ForCausalLM"},
      {"gemma2", "Gemma2ForCausalLM"},
      {"gemma3_text", "Gemma3ForCausalLM"},
      {"phi3", "Phi3ForCausalLM"},
      {"smollm3", "SmolLM3ForCausalLM"},
  }};
  for (const auto& [type, name] : kNames)
    if (type == model_type) return std::string(name);
  return "LlamaForCausalLM";
}

bool gguf_permutes_qk(const std::string& type) {
  return type == "llama" || type == "mistral" || type == "smollm3";
}

float llama_cpp_query_pre_attn_scalar(const std::string& architecture, const ModelConfig& c) {
  const int64_t big = architecture == "gemma2" ? 46 : 62;
  if (c.num_layers == big) return float(c.hidden_size / c.num_heads);
  return float(c.head_dim);
}

std::optional<int64_t> sliding_window_period(const std::vector<uint8_t>& sliding) {
  const auto n = static_cast<int64_t>(sliding.size());
  for (int64_t period = 1; period <= n + 1; ++period) {
    bool same = true;
    for (int64_t i = 0; i < n && same; ++i)
      same = (sliding[static_cast<std::size_t>(i)] != 0) == (i % period < period - 1);
    if (same) return period;
  }
  return std::nullopt;
}

int64_t default_sliding_window_period(const std::string& architecture) {
  return architecture == "gemma2" ? 2 : 6;
}

}  // namespace lora
