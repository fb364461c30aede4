#include "trainer/gguf_convert.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <utility>
#include <vector>

#include "trainer/gguf_arch.h"
#include "trainer/gguf_model.h"
#include "trainer/gguf_tokenizer_write.h"
#include "trainer/io/gguf_file.h"
#include "trainer/io/model_folder.h"
#include "trainer/model.h"
#include "trainer/model_config.h"

namespace lora {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

[[noreturn]] void bad(const fs::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
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
  // Gemma's four norms per block: llama.cpp calls the one before the MLP ffn_norm.
  static const std::pair<const char*, const char*> kSandwich[] = {
      {"post_attention_layernorm", "post_attention_norm"},
      {"pre_feedforward_layernorm", "ffn_norm"},
      {"post_feedforward_layernorm", "post_ffw_norm"}};
  static const std::pair<const char*, const char*> kNames[] = {
      {"self_attn.q_proj", "attn_q"},
      {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},
      {"self_attn.o_proj", "attn_output"},
      {"self_attn.qkv_proj", "attn_qkv"},
      {"mlp.gate_proj", "ffn_gate"},
      {"mlp.up_proj", "ffn_up"},
      {"mlp.gate_up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},
      {"input_layernorm", "attn_norm"},
      {"post_attention_layernorm", "ffn_norm"},
      {"self_attn.q_norm", "attn_q_norm"},
      {"self_attn.k_norm", "attn_k_norm"}};
  for (const char* suffix : {".weight", ".bias"}) {
    if (c.sandwich_norms)
      for (const auto& [from, to] : kSandwich)
        if (rest == std::string(from) + suffix) return GgufName{"blk." + layer + "." + to + suffix};
    for (const auto& [from, to] : kNames)
      if (rest == std::string(from) + suffix) {
        const std::string f(from);
        const int64_t heads = !permuted                 ? 0
                              : f == "self_attn.q_proj" ? c.num_heads
                              : f == "self_attn.k_proj" ? c.num_kv_heads
                                                        : 0;
        return GgufName{"blk." + layer + "." + to + suffix, heads};
      }
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
  if (auto arch = gguf_architecture_of(c.model_type)) return *arch;
  bad(dir, "model_type '" + c.model_type + "' cannot be written to GGUF (llama, mistral, qwen2, " +
               "qwen3, gemma2, gemma3, gemma3_text, phi3, smollm3 can)");
}

// What llama.cpp's runtime would run differently from the config is refused, not written.
void check_llama_cpp_runs_it(const ModelConfig& c, const std::string& arch, const fs::path& dir) {
  auto config = (dir / "config.json").string();
  if (arch == "gemma2" || arch == "gemma3") {
    const float scalar = llama_cpp_query_pre_attn_scalar(arch, c);
    if (c.query_pre_attn_scalar != scalar)
      bad(config, "query_pre_attn_scalar " + std::to_string(c.query_pre_attn_scalar) +
                      ": llama.cpp's " + arch + " scales queries by 1/sqrt(" +
                      std::to_string(scalar) + ") for this shape, so GGUF cannot hold this model");
    if (arch == "gemma2" && !c.tie_word_embeddings)
      bad(config, "an untied lm_head: llama.cpp's gemma2 always uses the embeddings as its head");
    if (arch == "gemma2" && (c.attn_logit_softcap <= 0 || c.final_logit_softcap <= 0))
      bad(config,
          "no logit soft-capping: llama.cpp's gemma2 always soft-caps attention and "
          "final logits");
    if (c.sliding_window > 0 && !sliding_window_period(c.sliding_layers))
      bad(config, "the sliding layers follow no period, which llama.cpp's " + arch +
                      " needs (attention.sliding_window_pattern)");
  }
  if (arch == "smollm3")
    for (int64_t i = 0; i < c.num_layers; ++i)
      if (c.uses_rope(i) != ((i + 1) % kSmolLM3NoRopeInterval != 0))
        bad(config, "no_rope_layers: llama.cpp's smollm3 leaves out RoPE on every " +
                        std::to_string(kSmolLM3NoRopeInterval) +
                        "th layer exactly, and this config differs at layer " + std::to_string(i));
}

void set_common_metadata(GgufWriter& w, const ModelConfig& c, const std::string& arch,
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
  if (arch != "phi3") {  // Phi-3's converter leaves the head size to hidden / heads
    w.set_u32(key("attention.key_length"), u32(c.head_dim));
    w.set_u32(key("attention.value_length"), u32(c.head_dim));
  }
  w.set_u32("general.file_type", plan.file_type());
}

// The keys llama.cpp's converter adds per family: its vocabulary size and rotary width for
// Llama-style ones, Gemma's soft-caps, windows and local RoPE base, Phi-3's rotary width,
// original context and window.
void set_family_metadata(GgufWriter& w, const ModelConfig& c, const std::string& arch) {
  auto key = [&](const char* k) { return arch + "." + k; };
  auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  if (arch == "llama" || arch == "qwen2" || arch == "qwen3" || arch == "smollm3") {
    w.set_u32(key("vocab_size"), u32(c.vocab_size));
    w.set_u32(key("rope.dimension_count"), u32(c.head_dim));
    // Not llama.cpp's (its llama runtime has no window): kept so that we read the model back.
    if (arch == "llama" && c.sliding_window > 0)
      w.set_u32(key("attention.sliding_window"), u32(c.sliding_window));
  }
  if (arch == "gemma2") {
    w.set_f32(key("attn_logit_softcapping"), c.attn_logit_softcap);
    w.set_f32(key("final_logit_softcapping"), c.final_logit_softcap);
  }
  if (arch == "gemma3") {
    w.set_f32(key("rope.freq_base_swa"), c.rope_local_theta);
    if (c.final_logit_softcap > 0) w.set_f32(key("final_logit_softcapping"), c.final_logit_softcap);
  }
  if (arch == "gemma2" || arch == "gemma3") {
    // Gemma 2's converter always writes its window; Gemma 3's when some layer slides.
    if (arch == "gemma2" || c.sliding_window > 0)
      w.set_u32(key("attention.sliding_window"), u32(c.sliding_window > 0 ? c.sliding_window : 0));
    // The period is llama.cpp's default unless the config says otherwise (ours, not the
    // converter's: it would leave llama.cpp at the default).
    const auto period = sliding_window_period(c.sliding_layers);
    const int64_t fallback = default_sliding_window_period(arch);
    std::vector<uint8_t> by_default(c.sliding_layers.size());
    for (std::size_t i = 0; i < by_default.size(); ++i)
      by_default[i] = int64_t(i) % fallback < fallback - 1;
    if (c.sliding_window > 0 && by_default != c.sliding_layers && period)
      w.set_u32(key("attention.sliding_window_pattern"), u32(*period));
  }
  if (arch == "phi3") {
    w.set_u32(key("rope.dimension_count"), u32(c.rotary_dim));
    const auto& raw = c.raw.contains("text_config") ? c.raw.at("text_config") : c.raw;
    const int64_t original = c.rope_scaling && c.rope_scaling->longrope
                                 ? c.rope_scaling->original_max_position_embeddings
                                 : raw.value("original_max_position_embeddings", int64_t(4096));
    w.set_u32(key("rope.scaling.original_context_length"), u32(original));
    w.set_u32(key("attention.sliding_window"), u32(c.sliding_window));
  }
}

// RoPE scaling as llama.cpp stores it: Llama 3's per-frequency divisors in rope_freqs.weight,
// linear as keys, LongRoPE's factors as rope_factors_short/long.weight with its attention factor.
std::vector<std::pair<std::string, std::vector<float>>> rope_tensors(GgufWriter& w,
                                                                     const ModelConfig& c,
                                                                     const std::string& arch,
                                                                     const fs::path& dir) {
  if (!c.rope_scaling) return {};
  const RopeScaling& s = *c.rope_scaling;
  if (s.linear) {
    if (arch == "phi3") bad(dir, "linear RoPE scaling on phi3 cannot be written to GGUF");
    w.set_string(arch + ".rope.scaling.type", "linear");
    w.set_f32(arch + ".rope.scaling.factor", s.factor);
    return {};
  }
  if (s.longrope) {
    if (arch != "phi3") bad(dir, "only phi3's LongRoPE scaling can be written to GGUF");
    w.set_f32(arch + ".rope.scaling.attn_factor", s.attention_factor);
    return {{"rope_factors_long.weight", s.long_factor},
            {"rope_factors_short.weight", s.short_factor}};
  }
  if (arch != "llama" && arch != "smollm3")
    bad(dir, "Llama 3 RoPE scaling can be written to GGUF for llama and smollm3 only");
  ModelConfig plain = c;
  plain.rope_scaling.reset();
  const auto base = plain.rope_inv_freq(), scaled = c.rope_inv_freq();
  std::vector<float> factors(base.size());
  for (std::size_t i = 0; i < base.size(); ++i) factors[i] = base[i] / scaled[i];
  return {{"rope_freqs.weight", factors}};
}

struct Tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// A gemma3 vision checkpoint's text model under the names of a text-only one; the vision tower
// and projector are not part of the language model's file (llama.cpp writes them as an mmproj).
std::optional<std::string> text_model_name(const std::string& name, const std::string& prefix) {
  for (const char* other : {"vision_tower.", "multi_modal_projector.", "model.vision_tower.",
                            "model.multi_modal_projector."})
    if (prefix != "model." && name.starts_with(other)) return std::nullopt;
  if (prefix == "model.") return name;
  if (name.starts_with(prefix)) return "model." + name.substr(prefix.size());
  if (name == "language_model.lm_head.weight") return "lm_head.weight";
  return name;
}

// Gemma 3's converter keeps the embedding rows the tokenizer names (vocab + added tokens).
int64_t gemma3_vocab_rows(const fs::path& dir, int64_t rows) {
  std::ifstream in(dir / "tokenizer.json");
  const json t = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!t.is_object() || !t.contains("model") || !t["model"].contains("vocab")) return rows;
  const auto named = static_cast<int64_t>(t["model"]["vocab"].size() +
                                          t.value("added_tokens", json::array()).size());
  return std::min(rows, named);
}

// The folder's tensors in GGUF naming and layout, in f32 (MLX-quantized linears dequantized),
// transformed as llama.cpp's converter does: Llama q/k rows permuted, Gemma norms as 1 + weight,
// Gemma 3's embedding rows cut to `vocab_rows`.
std::vector<Tensor> folder_tensors(const fs::path& dir, const json& config_json,
                                   const ModelConfig& c, int64_t vocab_rows) {
  const WeightSet weights = WeightSet::open_dir(dir);
  const std::string prefix = text_model_prefix(weights);
  std::vector<Tensor> out;
  for (const std::string& stored : weights.names()) {
    if (is_quantization_companion(weights, stored) || stored.ends_with("rotary_emb.inv_freq"))
      continue;
    const auto name = text_model_name(stored, prefix);
    if (!name) continue;
    if (*name == "lm_head.weight" && c.tie_word_embeddings) continue;
    const auto g = gguf_name(*name, c);
    if (!g) bad(dir, "tensor '" + stored + "' has no GGUF name in this converter");
    Tensor t{g->name, {}, {}};
    if (is_quantized_weight(weights, stored)) {
      const auto q = read_quantized(weights, weight_prefix(stored),
                                    *quantization_of(config_json, weight_prefix(stored)));
      t.shape = {q.rows, q.cols};
      t.values = dequantize(q);
    } else {
      t.shape = weights.info(stored).shape;
      t.values = weights.read_f32(stored);
    }
    if (g->qk_heads > 0) t.values = permute_rows(t.values, t.shape[0], g->qk_heads);
    if (c.norm_plus_one && name->ends_with("norm.weight"))
      for (float& v : t.values) v += 1.0f;
    if ((t.name == "token_embd.weight" || t.name == "output.weight") && t.shape[0] > vocab_rows) {
      t.values.resize(static_cast<std::size_t>(vocab_rows * t.shape[1]));
      t.shape[0] = vocab_rows;
    }
    out.push_back(std::move(t));
  }
  return out;
}

void add_tensor(GgufWriter& w, GgufConvertReport& report, const GgufTypePlan& plan, const Tensor& t,
                int64_t layers, bool tied) {
  const int64_t cols = t.shape.empty() ? 1 : t.shape.back();
  const GgmlType type =
      plan.type_of(t.name, static_cast<int64_t>(t.shape.size()), cols, layers, tied);
  const int64_t rows = cols == 0 ? 0 : static_cast<int64_t>(t.values.size()) / cols;
  w.add_tensor(t.name, type, t.shape, ggml_quantize_rows(type, t.values, rows, cols));
  ++report.tensors_by_type[std::string(ggml_type_name(type))];
}

GgufConvertReport convert_folder(const fs::path& dir, const fs::path& out,
                                 const GgufTypePlan& plan) {
  const json config_json = read_model_config_json(dir);
  const ModelConfig c = ModelConfig::from_json(config_json, (dir / "config.json").string());
  const std::string arch = gguf_architecture(c, dir);
  check_llama_cpp_runs_it(c, arch, dir);
  const int64_t vocab_rows = arch == "gemma3" ? gemma3_vocab_rows(dir, c.vocab_size) : c.vocab_size;
  GgufWriter w;
  set_common_metadata(w, c, arch, dir, plan);
  set_family_metadata(w, c, arch);
  w.set_u32("general.quantization_version", 2);
  set_gguf_tokenizer_of_folder(w, dir, vocab_rows);
  GgufConvertReport report;
  for (auto& [name, values] : rope_tensors(w, c, arch, dir))
    add_tensor(w, report, plan, {name, {static_cast<int64_t>(values.size())}, values}, c.num_layers,
               c.tie_word_embeddings);
  for (const Tensor& t : folder_tensors(dir, config_json, c, vocab_rows))
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
  return is_gguf_file(model) ? convert_gguf(model, out, plan) : convert_folder(model, out, plan);
}

}  // namespace lora
