#include "trainer/gguf_convert.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "trainer/gguf_model.h"
#include "trainer/gguf_tokenizer_write.h"
#include "trainer/io/gguf_file.h"
#include "trainer/io/model_folder.h"
#include "trainer/model_config.h"

namespace lora {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const fs::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

std::vector<std::byte> encode(GgmlType type, const std::vector<float>& w, int64_t cols) {
  const uint64_t rb = ggml_row_bytes(type, cols);
  const int64_t rows = cols == 0 ? 0 : static_cast<int64_t>(w.size()) / cols;
  std::vector<std::byte> bytes(rb * static_cast<uint64_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    ggml_quantize_row(type, w.data() + r * cols, cols, bytes.data() + r * rb);
  return bytes;
}

// Hugging Face name -> GGUF name and, for Llama q/k, the heads whose rows llama.cpp permutes.
struct GgufName {
  std::string name;
  int64_t qk_heads = 0;
};

std::optional<GgufName> gguf_name(const std::string& hf, const ModelConfig& c) {
  if (hf == "model.embed_tokens.weight") return GgufName{"token_embd.weight"};
  if (hf == "model.norm.weight") return GgufName{"output_norm.weight"};
  if (hf == "lm_head.weight") return GgufName{"output.weight"};
  const std::string prefix = "model.layers.";
  if (!hf.starts_with(prefix)) return std::nullopt;
  const std::size_t dot = hf.find('.', prefix.size());
  if (dot == std::string::npos) return std::nullopt;
  const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
  const std::string rest = hf.substr(dot + 1);
  const bool permuted = gguf_permutes_qk(c.model_type);
  static const std::pair<const char*, const char*> kNames[] = {
      {"self_attn.q_proj", "attn_q"},
      {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"},
      {"mlp.gate_proj", "ffn_gate"},
      {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},
      {"input_layernorm", "attn_norm"},
      {"post_attention_layernorm", "ffn_norm"},
      {"self_attn.q_norm", "attn_q_norm"},
      {"self_attn.k_norm", "attn_k_norm"}};
  for (const auto& [from, to] : kNames)
    for (const char* suffix : {".weight", ".bias"})
      if (rest == std::string(from) + suffix) {
        const std::string f(from);
        const int64_t heads = !permuted                 ? 0
                              : f == "self_attn.q_proj" ? c.num_heads
                              : f == "self_attn.k_proj" ? c.num_kv_heads
                                                        : 0;
        return GgufName{"blk." + layer + "." + to + suffix, heads};
      }
  return std::nullopt;
}

// Rows of a q/k weight (or bias) from Hugging Face order into llama.cpp's.
std::vector<float> permute_rows(const std::vector<float>& w, int64_t rows, int64_t heads) {
  const int64_t cols = static_cast<int64_t>(w.size()) / rows, head_dim = rows / heads;
  std::vector<float> out(w.size());
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(w.data() + gguf_qk_row_to_hf(r, head_dim) * cols, cols, out.data() + r * cols);
  return out;
}

std::string gguf_architecture(const ModelConfig& c, const fs::path& dir) {
  if (c.model_type == "llama" || c.model_type == "mistral") return "llama";
  if (c.model_type == "qwen2" || c.model_type == "qwen3") return c.model_type;
  bad(dir, "model_type '" + c.model_type +
               "' cannot be written to GGUF yet (llama, mistral, qwen2, qwen3 can)");
}

void set_model_metadata(GgufWriter& w, const ModelConfig& c, const std::string& arch,
                        const fs::path& dir, const GgufTypePlan& plan) {
  auto key = [&](const char* k) { return arch + "." + k; };
  auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  w.set_string("general.architecture", arch);
  w.set_string("general.type", "model");
  w.set_string("general.name", dir.filename().string());
  w.set_u32(key("block_count"), u32(c.num_layers));
  w.set_u32(key("context_length"), u32(c.max_position_embeddings));
  w.set_u32(key("embedding_length"), u32(c.hidden_size));
  w.set_u32(key("feed_forward_length"), u32(c.intermediate_size));
  w.set_u32(key("attention.head_count"), u32(c.num_heads));
  w.set_u32(key("attention.head_count_kv"), u32(c.num_kv_heads));
  w.set_f32(key("rope.freq_base"), c.rope_theta);
  w.set_f32(key("attention.layer_norm_rms_epsilon"), c.rms_norm_eps);
  w.set_u32(key("attention.key_length"), u32(c.head_dim));
  w.set_u32(key("attention.value_length"), u32(c.head_dim));
  w.set_u32("general.file_type", plan.file_type());
  w.set_u32(key("vocab_size"), u32(c.vocab_size));
  w.set_u32(key("rope.dimension_count"), u32(c.head_dim));
  w.set_u32("general.quantization_version", 2);
}

// Llama 3 RoPE scaling as llama.cpp stores it: per-frequency divisors in rope_freqs.weight.
std::optional<std::vector<float>> rope_factors(const ModelConfig& c, const std::string& arch,
                                               const fs::path& dir) {
  if (!c.rope_scaling) return std::nullopt;
  if (arch != "llama" || c.rope_scaling->linear)
    bad(dir, "only Llama 3 RoPE scaling can be written to GGUF yet");
  ModelConfig plain = c;
  plain.rope_scaling.reset();
  const auto base = plain.rope_inv_freq(), scaled = c.rope_inv_freq();
  std::vector<float> factors(base.size());
  for (std::size_t i = 0; i < base.size(); ++i) factors[i] = base[i] / scaled[i];
  return factors;
}

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// The folder's tensors in GGUF naming and layout, in f32 (MLX-quantized linears dequantized).
std::vector<Tensor> folder_tensors(const fs::path& dir, const json& config_json,
                                   const ModelConfig& c) {
  const WeightSet weights = WeightSet::open_dir(dir);
  std::vector<Tensor> out;
  for (const std::string& name : weights.names()) {
    if (is_quantization_companion(weights, name) || name.ends_with("rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && c.tie_word_embeddings) continue;
    const auto g = gguf_name(name, c);
    if (!g) bad(dir, "tensor '" + name + "' has no GGUF name in this converter");
    Tensor t{g->name, {}, {}};
    if (is_quantized_weight(weights, name)) {
      const auto q = read_quantized(weights, weight_prefix(name),
                                    *quantization_of(config_json, weight_prefix(name)));
      t.shape = {q.rows, q.cols};
      t.values = dequantize(q);
    } else {
      t.shape = weights.info(name).shape;
      t.values = weights.read_f32(name);
    }
    if (g->qk_heads > 0) t.values = permute_rows(t.values, t.shape[0], g->qk_heads);
    out.push_back(std::move(t));
  }
  return out;
}

void add_tensor(GgufWriter& w, GgufConvertReport& report, const GgufTypePlan& plan, const Tensor& t,
                int64_t layers, bool tied) {
  const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  const GgmlType type =
      plan.type_of(t.name, static_cast<int64_t>(t.shape.size()), cols, layers, tied);
  if (type == GgmlType::Q3_K)
    throw std::invalid_argument("Q3_K cannot be written yet (" + t.name + ")");
  w.add_tensor(t.name, type, t.shape, encode(type, t.values, cols));
  ++report.tensors_by_type[std::string(ggml_type_name(type))];
}

GgufConvertReport convert_folder(const fs::path& dir, const fs::path& out,
                                 const GgufTypePlan& plan) {
  const json config_json = read_model_config_json(dir);
  const ModelConfig c = ModelConfig::from_json(config_json, (dir / "config.json").string());
  const std::string arch = gguf_architecture(c, dir);
  GgufWriter w;
  set_model_metadata(w, c, arch, dir, plan);
  set_gguf_tokenizer_of_folder(w, dir, c.vocab_size);
  GgufConvertReport report;
  if (const auto factors = rope_factors(c, arch, dir))
    add_tensor(w, report, plan,
               {"rope_freqs.weight", {static_cast<int64_t>(factors->size())}, *factors},
               c.num_layers, c.tie_word_embeddings);
  for (const Tensor& t : folder_tensors(dir, config_json, c))
    add_tensor(w, report, plan, t, c.num_layers, c.tie_word_embeddings);
  w.write(out);
  return report;
}

GgufConvertReport convert_gguf(const fs::path& in, const fs::path& out, const GgufTypePlan& plan) {
  const GgufFile f = GgufFile::open(in);
  const ModelConfig c = ModelConfig::from_json(gguf_model_config_json(f), in.string());
  GgufWriter w(f.alignment());
  for (const auto& key : f.metadata_order())
    if (key != "general.alignment" && key != "general.file_type") w.set(key, *f.find(key));
  w.set_u32("general.file_type", plan.file_type());
  GgufConvertReport report;
  for (const GgufTensorInfo& t : f.tensors())
    add_tensor(w, report, plan, {t.name, t.shape(), f.read_f32(t.name)}, c.num_layers,
               c.tie_word_embeddings);
  w.write(out);
  return report;
}

}  // namespace

GgufConvertReport convert_to_gguf(const fs::path& model, const fs::path& out,
                                  const GgufTypePlan& plan) {
  check_distinct_output(out, model);
  if (plan.name() == "q3_k") throw std::invalid_argument("Q3_K cannot be written yet");
  return is_gguf_file(model) ? convert_gguf(model, out, plan) : convert_folder(model, out, plan);
}

}  // namespace lora
