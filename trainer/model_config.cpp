#include "trainer/model_config.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <fstream>
#include <numbers>
#include <stdexcept>

#include "autograd/quant.h"

namespace lora {

namespace {

using nlohmann::json;

[[noreturn]] void bad(const std::string& source, const std::string& what) {
  throw std::runtime_error(source + ": " + what);
}

bool present(const json& j, const char* key) { return j.contains(key) && !j.at(key).is_null(); }

int64_t get_int(const json& j, const char* key, const std::string& source,
                std::optional<int64_t> fallback = std::nullopt) {
  if (!present(j, key)) {
    if (fallback) return *fallback;
    bad(source, std::string("missing \"") + key + "\"");
  }
  const auto& v = j.at(key);
  if (!v.is_number_integer()) bad(source, std::string("\"") + key + "\" must be an integer");
  return v.get<int64_t>();
}

int64_t get_positive(const json& j, const char* key, const std::string& source,
                     std::optional<int64_t> fallback = std::nullopt) {
  const int64_t v = get_int(j, key, source, fallback);
  if (v <= 0)
    bad(source, std::string("\"") + key + "\" must be positive, got " + std::to_string(v));
  return v;
}

// A dimension between 1 and `most`: the bounds sit far above any published model, and refuse an
// absurd config (hidden_size 10^9) before anything is sized from it.
int64_t get_dimension(const json& j, const char* key, const std::string& source, int64_t most,
                      std::optional<int64_t> fallback = std::nullopt) {
  const int64_t v = get_positive(j, key, source, fallback);
  if (v > most)
    bad(source, std::string("\"") + key + "\" is " + std::to_string(v) + ", beyond the " +
                    std::to_string(most) + " this trainer accepts");
  return v;
}

float get_float(const json& j, const char* key, const std::string& source, float fallback) {
  if (!present(j, key)) return fallback;
  const auto& v = j.at(key);
  if (!v.is_number()) bad(source, std::string("\"") + key + "\" must be a number");
  return v.get<float>();
}

bool get_bool(const json& j, const char* key, const std::string& source, bool fallback) {
  if (!present(j, key)) return fallback;
  const auto& v = j.at(key);
  if (!v.is_boolean()) bad(source, std::string("\"") + key + "\" must be true or false");
  return v.get<bool>();
}

std::vector<float> float_list(const json& r, const char* key, const std::string& source) {
  if (!present(r, key) || !r.at(key).is_array())
    bad(source, std::string("rope_scaling needs a \"") + key + "\" list of numbers");
  std::vector<float> out;
  for (const auto& v : r.at(key)) {
    if (!v.is_number() || !(v.get<float>() > 0))
      bad(source, std::string("rope_scaling.") + key + " must hold positive numbers");
    out.push_back(v.get<float>());
  }
  return out;
}

// LongRoPE as transformers computes it (modeling_rope_utils._compute_longrope_parameters,
// v4.56): when the config has original_max_position_embeddings (Phi-3 does), the scale is
// max_position_embeddings / that, else rope_scaling.factor over max_position_embeddings; the
// attention factor, unless given, is sqrt(1 + ln(scale) / ln(original)) (1 for scale <= 1).
// Factor lists hold rotary_dim / 2 entries (checked once rotary_dim is known).
RopeScaling parse_longrope(const json& j, const json& r, const std::string& source) {
  RopeScaling s;
  s.longrope = true;
  s.short_factor = float_list(r, "short_factor", source);
  s.long_factor = float_list(r, "long_factor", source);
  const double max_pos = double(get_positive(j, "max_position_embeddings", source, 2048));
  double scale = get_float(r, "factor", source, 1.0f);
  // Phi3Config defines original_max_position_embeddings (4096) even where config.json omits it.
  const bool phi3 = j.value("model_type", "") == "phi3";
  if (present(j, "original_max_position_embeddings") || phi3) {
    s.original_max_position_embeddings =
        get_positive(j, "original_max_position_embeddings", source, 4096);
    scale = max_pos / double(s.original_max_position_embeddings);
  } else {
    s.original_max_position_embeddings = int64_t(max_pos);
  }
  s.factor = float(scale);
  if (present(r, "attention_factor")) {
    s.attention_factor = get_float(r, "attention_factor", source, 1.0f);
    if (!(s.attention_factor > 0)) bad(source, "rope_scaling.attention_factor must be positive");
  } else {
    s.attention_factor =
        scale <= 1.0
            ? 1.0f
            : float(std::sqrt(1.0 + std::log(scale) /
                                        std::log(double(s.original_max_position_embeddings))));
  }
  return s;
}

std::optional<RopeScaling> parse_rope_scaling(const json& j, const std::string& source) {
  if (!present(j, "rope_scaling")) return std::nullopt;
  const auto& r = j.at("rope_scaling");
  if (!r.is_object()) bad(source, "\"rope_scaling\" must be an object or null");
  std::string type;
  for (const char* key : {"rope_type", "type"})
    if (present(r, key) && r.at(key).is_string()) type = r.at(key).get<std::string>();
  if (type == "default") return std::nullopt;
  // "su" is what the first Phi-3 128k configs called longrope (transformers reads it as such).
  if (type == "longrope" || type == "su") return parse_longrope(j, r, source);
  if (type != "llama3" && type != "linear")
    bad(source, "unsupported rope_scaling type '" + type +
                    "' (supported: llama3, linear, longrope, default)");
  RopeScaling s;
  if (type == "linear") {
    s.linear = true;
    s.factor = get_float(r, "factor", source, s.factor);
    if (!(s.factor > 0)) bad(source, "rope_scaling needs factor > 0");
    return s;
  }
  s.factor = get_float(r, "factor", source, s.factor);
  s.low_freq_factor = get_float(r, "low_freq_factor", source, s.low_freq_factor);
  s.high_freq_factor = get_float(r, "high_freq_factor", source, s.high_freq_factor);
  s.original_max_position_embeddings = get_positive(r, "original_max_position_embeddings", source,
                                                    s.original_max_position_embeddings);
  if (!(s.factor > 0) || !(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0))
    bad(source, "rope_scaling needs factor > 0 and high_freq_factor > low_freq_factor > 0");
  return s;
}

// MLX-LM's "quantization": {"group_size", "bits", ["mode"], [per-module overrides]}. The loader
// reads each module's bits and group size from its tensor shapes, so overrides need no parsing.
void parse_quantization(const json& j, const std::string& source, ModelConfig& c) {
  if (present(j, "quantization")) {
    const auto& q = j.at("quantization");
    if (!q.is_object()) bad(source, "\"quantization\" must be an object");
    if (present(q, "mode") && q.at("mode") != "affine")
      bad(source, "unsupported quantization mode " + q.at("mode").dump() + " (only affine)");
    const auto bits = get_int(q, "bits", source);
    const auto group = get_int(q, "group_size", source);
    if (!valid_quant_bits(static_cast<int>(bits)))
      bad(source, "quantization bits " + std::to_string(bits) + " unsupported (2, 3, 4, 5, 6, 8)");
    if (!valid_group_size(static_cast<int>(group)))
      bad(source,
          "quantization group_size " + std::to_string(group) + " unsupported (32, 64, 128)");
    c.quant_bits = static_cast<int>(bits);
    c.quant_group_size = static_cast<int>(group);
    return;
  }
  if (present(j, "quantization_config")) {
    const auto& q = j.at("quantization_config");
    std::string method =
        q.is_object() && q.contains("quant_method") ? q.at("quant_method").dump() : q.dump();
    bad(source, "unsupported quantization_config " + method +
                    " (only MLX affine \"quantization\" and float weights are read)");
  }
}

bool is_gemma(const std::string& type) {
  return type == "gemma2" || type == "gemma3" || type == "gemma3_text";
}

// A `gemma3` (vision + text) config keeps the text model's fields in "text_config"; the
// top-level ones (token ids, quantization) apply too. Other configs are read as they are.
json text_fields(const json& j, const std::string& source) {
  if (j.at("model_type") != "gemma3") return j;
  if (!present(j, "text_config") || !j.at("text_config").is_object())
    bad(source, "model_type gemma3 needs a \"text_config\" object");
  json t = j.at("text_config");
  for (const auto& [key, value] : j.items())
    if (key != "text_config" && key != "vision_config" && !t.contains(key)) t[key] = value;
  return t;
}

Activation parse_activation(const json& j, const std::string& source, bool gemma) {
  // Gemma's modeling code reads hidden_activation; its configs also carry a hidden_act.
  const char* key = gemma && present(j, "hidden_activation") ? "hidden_activation" : "hidden_act";
  if (!present(j, key)) return gemma ? Activation::gelu_tanh : Activation::silu;
  const auto& v = j.at(key);
  if (v == "silu" || v == "swish") return Activation::silu;
  if (v == "gelu_pytorch_tanh" || v == "gelu_tanh") return Activation::gelu_tanh;
  bad(source,
      std::string("unsupported ") + key + " " + v.dump() + " (supported: silu, gelu_pytorch_tanh)");
}

// Which layers attend through a sliding window: "layer_types" when given, else the family's
// rule (Gemma 3: every `sliding_window_pattern`-th layer is global; Gemma 2: odd layers are;
// Mistral and Phi-3: all slide; Qwen2/3 and SmolLM3 with use_sliding_window: layers from
// max_window_layers on).
void parse_sliding_window(const json& j, const std::string& source, ModelConfig& c) {
  const bool gemma3 = c.model_type == "gemma3" || c.model_type == "gemma3_text";
  const int64_t fallback = is_gemma(c.model_type) ? 4096 : 0;
  c.sliding_window = present(j, "sliding_window")   ? get_positive(j, "sliding_window", source)
                     : j.contains("sliding_window") ? 0  // null: no window
                                                    : fallback;
  const auto n = static_cast<std::size_t>(c.num_layers);
  c.sliding_layers.assign(n, 0);
  if (c.sliding_window == 0) return;
  if (present(j, "layer_types")) {
    const auto& types = j.at("layer_types");
    if (!types.is_array() || types.size() != n)
      bad(source, "\"layer_types\" must list one entry per layer");
    for (std::size_t i = 0; i < n; ++i) {
      if (types[i] != "sliding_attention" && types[i] != "full_attention")
        bad(source, "layer_types[" + std::to_string(i) + "] is " + types[i].dump() +
                        " (sliding_attention or full_attention)");
      c.sliding_layers[i] = types[i] == "sliding_attention";
    }
    return;
  }
  if (gemma3) {
    const char* key =
        present(j, "sliding_window_pattern") ? "sliding_window_pattern" : "_sliding_window_pattern";
    const int64_t pattern = get_positive(j, key, source, 6);
    for (std::size_t i = 0; i < n; ++i) c.sliding_layers[i] = (int64_t(i) + 1) % pattern != 0;
  } else if (c.model_type == "gemma2") {
    for (std::size_t i = 0; i < n; ++i) c.sliding_layers[i] = i % 2 == 0;
  } else if (c.model_type == "mistral" || c.model_type == "phi3") {
    c.sliding_layers.assign(n, 1);
  } else if (get_bool(j, "use_sliding_window", source, false)) {
    const int64_t from = get_int(j, "max_window_layers", source, 0);
    for (std::size_t i = 0; i < n; ++i) c.sliding_layers[i] = int64_t(i) >= from;
  } else {
    c.sliding_window = 0;  // Qwen2/3, SmolLM3: the window is off unless use_sliding_window
  }
}

// Gemma 2/3 and SmolLM3 fields; the Llama layout otherwise.
void parse_family(const json& j, const std::string& source, ModelConfig& c) {
  const bool gemma = is_gemma(c.model_type);
  c.hidden_act = parse_activation(j, source, gemma);
  parse_sliding_window(j, source, c);
  if (gemma) {
    c.norm_plus_one = c.sandwich_norms = c.scale_embeddings = true;
    c.query_pre_attn_scalar = get_float(j, "query_pre_attn_scalar", source, 256.0f);
    if (!(c.query_pre_attn_scalar > 0)) bad(source, "query_pre_attn_scalar must be positive");
    const float cap_default = c.model_type == "gemma2" ? 50.0f : 0.0f;
    c.attn_logit_softcap = get_float(j, "attn_logit_softcapping", source, cap_default);
    c.final_logit_softcap =
        get_float(j, "final_logit_softcapping", source, c.model_type == "gemma2" ? 30.0f : 0.0f);
    if (c.attn_logit_softcap < 0 || c.final_logit_softcap < 0)
      bad(source, "logit soft-capping values must not be negative");
    if (c.model_type != "gemma2")
      c.rope_local_theta = get_float(j, "rope_local_base_freq", source, 10000.0f);
  }
  if (c.model_type == "smollm3") {
    // no_rope_layers[i] == 1: layer i uses RoPE (default: every 4th layer does not).
    c.rope_layers.resize(static_cast<std::size_t>(c.num_layers));
    if (present(j, "no_rope_layers")) {
      const auto& v = j.at("no_rope_layers");
      if (!v.is_array() || v.size() != c.rope_layers.size())
        bad(source, "\"no_rope_layers\" must list one entry per layer");
      for (std::size_t i = 0; i < v.size(); ++i) {
        if (!v[i].is_number_integer()) bad(source, "\"no_rope_layers\" must hold 0 or 1");
        c.rope_layers[i] = v[i].get<int64_t>() != 0;
      }
    } else {
      const int64_t interval = get_positive(j, "no_rope_layer_interval", source, 4);
      for (std::size_t i = 0; i < c.rope_layers.size(); ++i)
        c.rope_layers[i] = (int64_t(i) + 1) % interval != 0;
    }
  }
}

// Phi-3's fused projections and partial rotary embedding; the rotary width every family uses.
void parse_rotary(const json& j, const std::string& source, ModelConfig& c) {
  c.fused_projections = c.model_type == "phi3";
  const float partial = get_float(j, "partial_rotary_factor", source, 1.0f);
  if (!(partial > 0 && partial <= 1)) bad(source, "partial_rotary_factor must be in (0, 1]");
  // int(head_dim * factor) as transformers computes it, in double like Python.
  c.rotary_dim = int64_t(double(c.head_dim) * double(partial));
  if (c.rotary_dim < 2 || c.rotary_dim % 2 != 0)
    bad(source, "partial_rotary_factor gives a rotary width of " + std::to_string(c.rotary_dim) +
                    " features, which must be even and at least 2");
  if (c.rotary_dim != c.head_dim && c.model_type != "phi3")
    bad(source, "partial_rotary_factor is only supported for phi3");
  if (c.rope_scaling && c.rope_scaling->longrope) {
    const auto half = static_cast<std::size_t>(c.rotary_dim / 2);
    if (c.rope_scaling->short_factor.size() != half || c.rope_scaling->long_factor.size() != half)
      bad(source, "rope_scaling short_factor and long_factor must hold " + std::to_string(half) +
                      " numbers (half the rotary width), got " +
                      std::to_string(c.rope_scaling->short_factor.size()) + " and " +
                      std::to_string(c.rope_scaling->long_factor.size()));
  }
}

}  // namespace

ModelConfig ModelConfig::from_json(const json& file, const std::string& source) {
  if (!file.is_object()) bad(source, "not a JSON object");
  ModelConfig c;
  c.raw = file;
  if (!present(file, "model_type") || !file.at("model_type").is_string())
    bad(source, "missing \"model_type\"");
  c.model_type = file.at("model_type").get<std::string>();
  static const std::array<const char*, 9> kSupported = {
      "llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "gemma3", "smollm3", "phi3"};
  if (std::find(kSupported.begin(), kSupported.end(), c.model_type) == kSupported.end())
    bad(source, "unsupported model_type '" + c.model_type +
                    "' (supported: llama, mistral, qwen2, qwen3, gemma2, gemma3_text, gemma3, "
                    "smollm3, phi3)");
  const json j = text_fields(file, source);
  const bool gemma = is_gemma(c.model_type);
  if (get_bool(j, "mlp_bias", source, false)) bad(source, "unsupported mlp_bias: true");

  c.hidden_size = get_dimension(j, "hidden_size", source, int64_t(1) << 17);
  c.intermediate_size = get_dimension(j, "intermediate_size", source, int64_t(1) << 20);
  c.num_layers = get_dimension(j, "num_hidden_layers", source, 4096);
  c.num_heads = get_dimension(j, "num_attention_heads", source, 4096);
  c.num_kv_heads = get_dimension(j, "num_key_value_heads", source, 4096, c.num_heads);
  if (c.num_heads % c.num_kv_heads != 0)
    bad(source, "num_attention_heads " + std::to_string(c.num_heads) +
                    " is not a multiple of num_key_value_heads " + std::to_string(c.num_kv_heads));
  if (!present(j, "head_dim") && c.hidden_size % c.num_heads != 0)
    bad(source, "hidden_size is not a multiple of num_attention_heads and head_dim is not given");
  c.head_dim =
      get_dimension(j, "head_dim", source, 8192, gemma ? 256 : c.hidden_size / c.num_heads);
  if (c.head_dim % 2 != 0) bad(source, "head_dim " + std::to_string(c.head_dim) + " must be even");
  c.vocab_size = get_dimension(j, "vocab_size", source, int64_t(1) << 24);
  c.max_position_embeddings = get_dimension(j, "max_position_embeddings", source, int64_t(1) << 26,
                                            c.max_position_embeddings);
  c.rms_norm_eps = get_float(j, "rms_norm_eps", source, c.rms_norm_eps);
  c.rope_theta =
      get_float(j, "rope_theta", source,
                c.model_type == "gemma3" || c.model_type == "gemma3_text" ? 1e6f : c.rope_theta);
  if (!(c.rope_theta > 0)) bad(source, "rope_theta must be positive");
  c.rope_scaling = parse_rope_scaling(j, source);
  c.tie_word_embeddings = get_bool(j, "tie_word_embeddings", source, gemma);
  c.attention_bias = c.model_type == "qwen2" || get_bool(j, "attention_bias", source, false);
  c.qk_norm = c.model_type == "qwen3" || c.model_type == "gemma3" || c.model_type == "gemma3_text";
  parse_family(j, source, c);
  parse_rotary(j, source, c);
  parse_quantization(j, source, c);

  c.bos_token_id = get_int(j, "bos_token_id", source, -1);
  if (present(j, "eos_token_id")) {
    const auto& e = j.at("eos_token_id");
    if (e.is_number_integer()) {
      c.eos_token_ids.push_back(e.get<int64_t>());
    } else if (e.is_array()) {
      for (const auto& id : e) {
        if (!id.is_number_integer()) bad(source, "\"eos_token_id\" list must hold integers");
        c.eos_token_ids.push_back(id.get<int64_t>());
      }
    } else {
      bad(source, "\"eos_token_id\" must be an integer or a list of integers");
    }
  }
  return c;
}

ModelConfig ModelConfig::load(const std::filesystem::path& model_dir) {
  const auto path = model_dir / "config.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot read (is this a model folder?)");
  auto j = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw std::runtime_error(path.string() + ": not well-formed JSON");
  return from_json(j, path.string());
}

int64_t ModelConfig::window_of(int64_t layer) const {
  const auto i = static_cast<std::size_t>(layer);
  return i < sliding_layers.size() && sliding_layers[i] ? sliding_window : 0;
}

bool ModelConfig::uses_rope(int64_t layer) const {
  const auto i = static_cast<std::size_t>(layer);
  return i >= rope_layers.size() || rope_layers[i];
}

float ModelConfig::rope_attention_factor() const {
  return rope_scaling && rope_scaling->longrope ? rope_scaling->attention_factor : 1.0f;
}

std::vector<float> ModelConfig::rope_inv_freq(bool local, bool long_factors) const {
  const int64_t dim = rotary_dim > 0 ? rotary_dim : head_dim;
  const int64_t half = dim / 2;
  const double theta = local ? rope_local_theta : rope_theta;
  std::vector<float> inv(static_cast<std::size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    // Same float32 steps as the reference: exponent in f32, then theta^exponent.
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
    inv[static_cast<std::size_t>(i)] = static_cast<float>(1.0 / std::pow(theta, double(exponent)));
  }
  if (rope_scaling && rope_scaling->longrope && !local) {
    // 1 / (ext_factor * theta^exponent), the product in f32 as transformers forms it.
    const auto& ext = long_factors ? rope_scaling->long_factor : rope_scaling->short_factor;
    for (int64_t i = 0; i < half; ++i) {
      const float exponent = static_cast<float>(2 * i) / static_cast<float>(dim);
      const float base = static_cast<float>(std::pow(theta, double(exponent)));
      inv[static_cast<std::size_t>(i)] = 1.0f / (ext[static_cast<std::size_t>(i)] * base);
    }
    return inv;
  }
  if (!rope_scaling || local) return inv;
  if (rope_scaling->linear) {
    for (auto& f : inv) f /= rope_scaling->factor;
    return inv;
  }
  // Llama 3.1: long wavelengths slowed down by `factor`, short ones kept, a smooth blend between.
  const auto& s = *rope_scaling;
  const double old_ctx = static_cast<double>(s.original_max_position_embeddings);
  const double low_wavelen = old_ctx / s.low_freq_factor;
  const double high_wavelen = old_ctx / s.high_freq_factor;
  for (auto& f : inv) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen < high_wavelen) continue;
    if (wavelen > low_wavelen) {
      f = static_cast<float>(f / s.factor);
    } else {
      const double smooth =
          (old_ctx / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = static_cast<float>((1 - smooth) * f / s.factor + smooth * f);
    }
  }
  return inv;
}

}  // namespace lora
