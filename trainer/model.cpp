#include "trainer/model.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <stdexcept>

#include "autograd/tensor.h"
#include "trainer/gguf_model.h"
#include "trainer/io/model_folder.h"
#include "trainer/io/safetensors.h"
#include "trainer/setting_error.h"

namespace lora {

namespace {

struct ProjNames {
  Proj proj;
  std::string_view name;
  std::string_view path;
};
constexpr std::array<ProjNames, kNumProj> kProjNames{
    {{Proj::q, "q_proj", "self_attn.q_proj"},
     {Proj::k, "k_proj", "self_attn.k_proj"},
     {Proj::v, "v_proj", "self_attn.v_proj"},
     {Proj::o, "o_proj", "self_attn.o_proj"},
     {Proj::gate, "gate_proj", "mlp.gate_proj"},
     {Proj::up, "up_proj", "mlp.up_proj"},
     {Proj::down, "down_proj", "mlp.down_proj"},
     {Proj::qkv, "qkv_proj", "self_attn.qkv_proj"},
     {Proj::gate_up, "gate_up_proj", "mlp.gate_up_proj"}}};

// Reads a model folder's tensors into their frozen formats, checking every shape on the way.
class WeightLoader {
 public:
  WeightLoader(const std::filesystem::path& dir, const LoadOptions& options)
      : dir_(dir), options_(options), weights_(WeightSet::open_dir(dir)) {}

  bool has_matrix(const std::string& module) const { return weights_.contains(module + ".weight"); }
  const WeightSet& weights() const { return weights_; }

  // A [rows, cols] matrix stored as `module`.weight (float) or MLX-quantized
  // (`module`.weight uint32 + .scales + .biases).
  FrozenWeight matrix(const std::string& module, int64_t rows, int64_t cols) const {
    const std::string wname = module + ".weight";
    if (!weights_.contains(wname)) fail(wname, "missing tensor");
    if (weights_.contains(module + ".scales")) return quantized(module, rows, cols);
    const auto& info = weights_.info(wname);
    expect_shape(wname, info.shape, {rows, cols});
    const int bits = options_.quantize_bits;
    const bool quantize_now = bits != 0 && quantizable(cols, bits, options_.quantize_group_size);
    if (info.dtype == DType::BF16 && !quantize_now) {
      std::vector<uint16_t> raw(static_cast<std::size_t>(rows * cols));
      const auto bytes = weights_.file_of(wname).bytes(wname);
      std::memcpy(raw.data(), bytes.data(), bytes.size());
      return FrozenWeight::from_bf16(std::move(raw), rows, cols);
    }
    if (info.dtype != DType::F32 && info.dtype != DType::F16 && info.dtype != DType::BF16 &&
        info.dtype != DType::F64)
      fail(wname, "dtype " + std::string(dtype_name(info.dtype)) + " is not a float weight type");
    auto values = weights_.read_f32(wname);
    if (quantize_now) {
      // Scales and biases in the weights' own dtype, as MLX's converter does.
      const DType scale_dtype = info.dtype == DType::F64 ? DType::F32 : info.dtype;
      return FrozenWeight::from_quantized(
          quantize(values, rows, cols, bits, options_.quantize_group_size, scale_dtype));
    }
    return FrozenWeight::from_f32(std::move(values), rows, cols);
  }

  // The dtype a matrix is stored in (its scales' dtype when MLX-quantized).
  DType stored_dtype(const std::string& module) const {
    const std::string scales = module + ".scales";
    return weights_.info(weights_.contains(scales) ? scales : module + ".weight").dtype;
  }

  std::vector<float> vector(const std::string& name, int64_t size) const {
    if (!weights_.contains(name)) fail(name, "missing tensor");
    expect_shape(name, weights_.info(name).shape, {size});
    return weights_.read_f32(name);
  }

 private:
  [[noreturn]] void fail(const std::string& tensor, const std::string& what) const {
    throw std::runtime_error(dir_.string() + ": tensor '" + tensor + "': " + what);
  }

  void expect_shape(const std::string& name, const std::vector<int64_t>& found,
                    const std::vector<int64_t>& want) const {
    if (found != want)
      fail(name, "expected shape " + shape_to_string(want) + ", found " + shape_to_string(found));
  }

  // Bits and group size come from the tensor shapes and the width the config gives (so MLX's
  // per-module overrides just work).
  FrozenWeight quantized(const std::string& module, int64_t rows, int64_t cols) const {
    if (options_.quantize_bits != 0)
      throw std::runtime_error(dir_.string() +
                               ": the model is already MLX-quantized; load it without quantizing");
    const QuantLayout layout = quantized_layout_for_width(weights_, module, cols);
    if (layout.rows != rows)
      fail(module + ".weight", "quantized weight has " + std::to_string(layout.rows) +
                                   " rows, expected " + std::to_string(rows));
    return FrozenWeight::from_quantized(read_quantized(weights_, module, layout));
  }

  std::filesystem::path dir_;
  const LoadOptions& options_;
  WeightSet weights_;
};

}  // namespace

std::string text_model_prefix(const WeightSet& weights) {
  for (const char* prefix : {"model.", "language_model.model.", "model.language_model."})
    if (weights.contains(std::string(prefix) + "embed_tokens.weight")) return prefix;
  return "model.";  // a missing tensor is then reported under the usual name
}

std::span<const Proj> block_projs(const ModelConfig& config) {
  if (config.fused_projections) return kFusedProjs;
  return kSeparateProjs;
}

std::vector<Proj> projs_for(const ModelConfig& config, Proj p) {
  if (config.fused_projections) {
    if (p == Proj::q || p == Proj::k || p == Proj::v) return {Proj::qkv};
    if (p == Proj::gate || p == Proj::up) return {Proj::gate_up};
    return {p};
  }
  if (p == Proj::qkv) return {Proj::q, Proj::k, Proj::v};
  if (p == Proj::gate_up) return {Proj::gate, Proj::up};
  return {p};
}

std::vector<Proj> block_keys(const ModelConfig& config, const std::vector<Proj>& keys) {
  std::vector<Proj> out;
  for (const Proj key : keys)
    for (const Proj p : projs_for(config, key))
      if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(p);
  std::sort(out.begin(), out.end());
  return out;
}

std::string_view proj_name(Proj p) { return kProjNames[static_cast<int>(p)].name; }
std::string_view proj_module_path(Proj p) { return kProjNames[static_cast<int>(p)].path; }
std::optional<Proj> proj_from_name(std::string_view name) {
  for (const auto& e : kProjNames)
    if (name == e.name || name == e.path) return e.proj;
  return std::nullopt;
}

std::string layer_module_name(int64_t layer, std::string_view module, std::string_view top) {
  return std::string(top) + "layers." + std::to_string(layer) + "." + std::string(module);
}
std::string layer_module_name(int64_t layer, Proj p, std::string_view top) {
  return layer_module_name(layer, proj_module_path(p), top);
}

std::size_t Model::stored_bytes() const {
  auto floats = [](const std::vector<float>& v) { return v.size() * sizeof(float); };
  std::size_t total =
      embed.stored_bytes() + (lm_head ? lm_head->stored_bytes() : 0) + floats(final_norm);
  for (const auto& l : layers) {
    for (const auto& p : l.proj) total += p.stored_bytes();
    for (const auto* v : {&l.q_bias, &l.k_bias, &l.v_bias, &l.input_norm, &l.post_attention_norm,
                          &l.q_norm, &l.k_norm, &l.pre_ffn_norm, &l.post_ffn_norm})
      total += floats(*v);
  }
  return total;
}

void set_family_constants(Model& m) {
  const ModelConfig& c = m.config;
  if (c.rope_local_theta > 0) m.rope_inv_freq_local = c.rope_inv_freq(/*local=*/true);
  if (c.rope_scaling && c.rope_scaling->longrope) {
    m.rope_inv_freq = c.rope_inv_freq();
    m.rope_inv_freq_long = c.rope_inv_freq(/*local=*/false, /*long_factors=*/true);
  }
  m.embed_scale = 0;
  if (!c.scale_embeddings) return;
  // sqrt(hidden) as a float32, then in the checkpoint's dtype (HF casts it to the weights' dtype).
  float scale = std::sqrt(float(c.hidden_size));
  std::array<std::byte, 8> stored{};
  convert_from_f32(m.embed_dtype, &scale, 1, stored.data());
  convert_to_f32(m.embed_dtype, stored.data(), 1, &scale);
  m.embed_scale = scale;
}

namespace {

// Gemma stores RMSNorm weights as offsets from 1; the forward uses 1 + weight.
void shift_norms(Model& m) {
  auto shift = [](std::vector<float>& v) {
    for (float& x : v) x += 1.0f;
  };
  shift(m.final_norm);
  for (auto& l : m.layers)
    for (auto* v : {&l.input_norm, &l.post_attention_norm, &l.pre_ffn_norm, &l.post_ffn_norm,
                    &l.q_norm, &l.k_norm})
      shift(*v);
}

}  // namespace

void check_quantization(int bits, int group_size) {
  if (!valid_quant_bits(bits))
    throw SettingError("quantize",
                       "bits must be one of 2, 3, 4, 5, 6, 8, got " + std::to_string(bits));
  if (!valid_group_size(group_size))
    throw SettingError("q_group_size", "must be 32, 64 or 128, got " + std::to_string(group_size));
}

Model load_model(const std::filesystem::path& dir, const LoadOptions& options) {
  if (is_gguf_file(dir)) return load_gguf_model(dir, options);
  if (options.quantize_bits != 0)
    check_quantization(options.quantize_bits, options.quantize_group_size);
  Model m;
  m.dir = dir;
  m.config = ModelConfig::load(dir);
  const auto& c = m.config;
  WeightLoader w(dir, options);

  const int64_t hidden = c.hidden_size, q_out = c.num_heads * c.head_dim,
                kv_out = c.num_kv_heads * c.head_dim, inter = c.intermediate_size;
  m.tensor_prefix = text_model_prefix(w.weights());
  const std::string& top = m.tensor_prefix;
  m.embed = w.matrix(top + "embed_tokens", c.vocab_size, hidden);
  m.embed_dtype = w.stored_dtype(top + "embed_tokens");
  if (!c.tie_word_embeddings) {
    const std::string head = top == "language_model.model." ? "language_model.lm_head" : "lm_head";
    if (!w.has_matrix(head))
      throw std::runtime_error(dir.string() + ": tensor '" + head +
                               ".weight': missing (config.json says the "
                               "embeddings are not tied)");
    m.lm_head = w.matrix(head, c.vocab_size, hidden);
  }
  m.final_norm = w.vector(top + "norm.weight", hidden);

  const std::array<std::pair<int64_t, int64_t>, kNumProj> shapes{{{q_out, hidden},
                                                                  {kv_out, hidden},
                                                                  {kv_out, hidden},
                                                                  {hidden, q_out},
                                                                  {inter, hidden},
                                                                  {inter, hidden},
                                                                  {hidden, inter},
                                                                  {q_out + 2 * kv_out, hidden},
                                                                  {2 * inter, hidden}}};
  m.layers.resize(static_cast<std::size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string prefix = layer_module_name(i, "", top);
    auto& layer = m.layers[static_cast<std::size_t>(i)];
    for (const Proj p : block_projs(c)) {
      const auto [rows, cols] = shapes[static_cast<int>(p)];
      layer.at(p) = w.matrix(layer_module_name(i, p, top), rows, cols);
    }
    if (c.attention_bias) {
      layer.q_bias = w.vector(prefix + "self_attn.q_proj.bias", q_out);
      layer.k_bias = w.vector(prefix + "self_attn.k_proj.bias", kv_out);
      layer.v_bias = w.vector(prefix + "self_attn.v_proj.bias", kv_out);
    }
    if (c.qk_norm) {
      layer.q_norm = w.vector(prefix + "self_attn.q_norm.weight", c.head_dim);
      layer.k_norm = w.vector(prefix + "self_attn.k_norm.weight", c.head_dim);
    }
    layer.input_norm = w.vector(prefix + "input_layernorm.weight", hidden);
    layer.post_attention_norm = w.vector(prefix + "post_attention_layernorm.weight", hidden);
    if (c.sandwich_norms) {
      layer.pre_ffn_norm = w.vector(prefix + "pre_feedforward_layernorm.weight", hidden);
      layer.post_ffn_norm = w.vector(prefix + "post_feedforward_layernorm.weight", hidden);
    }
  }
  if (c.norm_plus_one) shift_norms(m);
  m.rope_inv_freq = c.rope_inv_freq();
  set_family_constants(m);
  return m;
}

}  // namespace lora
