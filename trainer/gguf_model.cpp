#include "trainer/gguf_model.h"

#include <array>
#include <cstring>
#include <fstream>
#include <set>
#include <stdexcept>

#include "autograd/tensor.h"
#include "trainer/gguf_arch.h"
#include "trainer/setting_error.h"

namespace lora {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// llama.cpp's names; its phi3 files hold [q; k; v] in attn_qkv and [gate; up] in ffn_up.
constexpr std::array<std::string_view, kNumProj> kGgufProj{"attn_q",      "attn_k",   "attn_v",
                                                           "attn_output", "ffn_gate", "ffn_up",
                                                           "ffn_down",    "attn_qkv", "ffn_up"};

[[noreturn]] void bad(const fs::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

// Reads the file's tensors into the model's frozen formats, checking every shape.
class GgufLoader {
 public:
  GgufLoader(GgufFile& file, bool octets) : file_(file), octets_(octets) {}

  bool has(const std::string& name) const { return file_.contains_tensor(name); }

  // A [rows, cols] matrix in its own ggml type. With `qk_heads` (llama q/k), the rows are put
  // back in Hugging Face order: a copy of the row bytes, the blocks themselves untouched. Q4_0
  // takes the octet layout where the options ask for it and the matrix fits it.
  FrozenWeight matrix(const std::string& name, int64_t rows, int64_t cols, int64_t qk_heads = 0) {
    const GgufTensorInfo& t = info(name, {rows, cols});
    const bool octets = octets_ && q4_0_octets_fit(t.type, rows, cols);
    if (qk_heads == 0) {
      GgmlMatrix m{rows, cols, t.type, file_.shared_bytes(t)};
      // A tensor read twice is rewritten once.
      if (octets &&
          (rewritten_.contains(name) || file_.rewrite_in_place(t, [&](std::span<std::byte> bytes) {
            q4_0_to_octets(bytes, rows, cols);
          }))) {
        rewritten_.insert(name);
        m.layout = GgmlLayout::Q4_0Octets;
      }
      return FrozenWeight::from_ggml(std::move(m));
    }
    const auto src = file_.bytes(t);
    const uint64_t rb = ggml_row_bytes(t.type, cols);
    std::vector<std::byte> hf(src.size());
    const int64_t head_dim = rows / qk_heads;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t to = gguf_qk_row_to_hf(r, head_dim);
      std::memcpy(hf.data() + to * rb, src.data() + r * rb, rb);
    }
    if (octets) q4_0_to_octets(hf, rows, cols);
    GgmlMatrix m = GgmlMatrix::owning(rows, cols, t.type, hf);
    if (octets) m.layout = GgmlLayout::Q4_0Octets;
    return FrozenWeight::from_ggml(std::move(m));
  }

  std::vector<float> vector(const std::string& name, int64_t size) const {
    info(name, {size});
    return file_.read_f32(name);
  }

 private:
  const GgufTensorInfo& info(const std::string& name, const std::vector<int64_t>& shape) const {
    if (!file_.contains_tensor(name)) bad(file_.path(), "tensor '" + name + "' is missing");
    const GgufTensorInfo& t = file_.tensor(name);
    if (t.shape() != shape)
      bad(file_.path(), "tensor '" + name + "': expected shape " + shape_to_string(shape) +
                            ", found " + shape_to_string(t.shape()));
    return t;
  }

  GgufFile& file_;
  bool octets_;
  std::set<std::string> rewritten_;
};

std::string block_tensor(int64_t layer, const std::string& what) {
  return "blk." + std::to_string(layer) + "." + what;
}

}  // namespace

bool is_gguf_file(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

int64_t gguf_qk_row_to_hf(int64_t row, int64_t head_dim) {
  const int64_t head = row / head_dim, within = row % head_dim, half = head_dim / 2;
  return head * head_dim + (within % 2) * half + within / 2;
}

std::string gguf_proj_tensor(Proj p, int64_t layer) {
  return block_tensor(layer, std::string(kGgufProj[static_cast<int>(p)]) + ".weight");
}

namespace {

// Gemma 2/3: GeGLU, llama.cpp's query scale, soft-capping, sliding layers by period, Gemma 3's
// local RoPE base. The norms are stored as llama.cpp's converter writes them, 1 + weight.
void gemma_fields(const GgufFile& f, const std::string& arch, json& c) {
  auto key = [&](const char* k) { return arch + "." + k; };
  c["hidden_activation"] = "gelu_pytorch_tanh";
  const bool gemma2 = arch == "gemma2";
  ModelConfig shape;
  shape.num_layers = c["num_hidden_layers"];
  shape.hidden_size = c["hidden_size"];
  shape.num_heads = c["num_attention_heads"];
  shape.head_dim = c.value("head_dim", shape.hidden_size / shape.num_heads);
  c["head_dim"] = shape.head_dim;
  c["query_pre_attn_scalar"] = llama_cpp_query_pre_attn_scalar(arch, shape);
  c["attn_logit_softcapping"] =
      gemma2 ? f.real_or(key("attn_logit_softcapping")).value_or(50.0) : 0.0;
  c["final_logit_softcapping"] =
      f.real_or(key("final_logit_softcapping")).value_or(gemma2 ? 30.0 : 0.0);
  const int64_t window = f.int_or(key("attention.sliding_window")).value_or(gemma2 ? 4096 : 0);
  if (!gemma2) c["rope_local_base_freq"] = f.real_or(key("rope.freq_base_swa")).value_or(10000.0);
  if (window <= 0) {
    c["sliding_window"] = nullptr;
    return;
  }
  c["sliding_window"] = window;
  const int64_t period = f.int_or(key("attention.sliding_window_pattern"))
                             .value_or(default_sliding_window_period(arch));
  json types = json::array();
  for (int64_t i = 0; i < shape.num_layers; ++i)
    types.push_back(period == 0 || i % period < period - 1 ? "sliding_attention"
                                                           : "full_attention");
  c["layer_types"] = types;
}

// Phi-3: RoPE on rope.dimension_count features of each head; LongRoPE from the
// rope_factors_short/long tensors, the attention factor and original context from the keys.
void phi3_fields(const GgufFile& f, json& c) {
  const int64_t head_dim =
      c.value("head_dim", int64_t(c["hidden_size"]) / int64_t(c["num_attention_heads"]));
  if (auto rot = f.int_or("phi3.rope.dimension_count"))
    c["partial_rotary_factor"] = double(*rot) / double(head_dim);
  const int64_t window = f.int_or("phi3.attention.sliding_window").value_or(0);
  c["sliding_window"] = window > 0 ? json(window) : json(nullptr);
  if (auto orig = f.int_or("phi3.rope.scaling.original_context_length"))
    c["original_max_position_embeddings"] = *orig;
  if (!f.contains_tensor("rope_factors_long.weight")) return;
  if (!f.contains_tensor("rope_factors_short.weight"))
    bad(f.path(), "tensor 'rope_factors_short.weight' is missing (rope_factors_long is there)");
  c["rope_scaling"] = {
      {"rope_type", "longrope"},
      {"short_factor", f.read_f32("rope_factors_short.weight")},
      {"long_factor", f.read_f32("rope_factors_long.weight")},
      {"attention_factor", f.real_or("phi3.rope.scaling.attn_factor").value_or(1.0)}};
}

// RoPE scaling stored as keys (linear); Llama 3's is a tensor (rope_freqs), read at load.
void rope_scaling_fields(const GgufFile& f, const std::string& arch, json& c) {
  const auto type = f.string_or(arch + ".rope.scaling.type");
  if (!type || *type == "none") return;
  if (*type != "linear")
    bad(f.path(),
        "metadata '" + arch + ".rope.scaling.type' is '" + *type + "' (none and linear are read)");
  c["rope_scaling"] = {{"rope_type", "linear"},
                       {"factor", f.get_real(arch + ".rope.scaling.factor")}};
}

}  // namespace

json gguf_model_config_json(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  const auto model_type = model_type_of_gguf(arch);
  if (!model_type)
    bad(f.path(), "architecture '" + arch + "' is not supported (" + kGgufArchitectures + " are)");
  auto key = [&](const char* k) { return arch + "." + k; };
  json c;
  c["model_type"] = *model_type;
  c["architectures"] = {hf_architecture_of(*model_type)};
  c["hidden_size"] = f.get_int(key("embedding_length"));
  c["intermediate_size"] = f.get_int(key("feed_forward_length"));
  c["num_hidden_layers"] = f.get_int(key("block_count"));
  const int64_t heads = f.get_int(key("attention.head_count"));
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = f.int_or(key("attention.head_count_kv")).value_or(heads);
  if (auto kl = f.int_or(key("attention.key_length"))) c["head_dim"] = *kl;
  c["max_position_embeddings"] = f.int_or(key("context_length")).value_or(2048);
  c["rms_norm_eps"] = f.get_real(key("attention.layer_norm_rms_epsilon"));
  c["rope_theta"] = f.real_or(key("rope.freq_base")).value_or(10000.0);
  const GgufValue* tokens = f.find("tokenizer.ggml.tokens");
  const auto vocab = f.int_or(key("vocab_size"));
  if (!vocab && !tokens)
    bad(f.path(),
        "metadata '" + key("vocab_size") + "' and 'tokenizer.ggml.tokens' are both missing");
  // Gemma 3's converter drops the embedding rows past the tokenizer's: the tensor says.
  c["vocab_size"] = vocab ? *vocab
                    : f.contains_tensor("token_embd.weight")
                        ? f.tensor("token_embd.weight").rows()
                        : static_cast<int64_t>(tokens->array_size());
  // Gemma 2 in llama.cpp always ties the head to the embeddings.
  c["tie_word_embeddings"] = arch == "gemma2" || !f.contains_tensor("output.weight");
  c["hidden_act"] = "silu";
  rope_scaling_fields(f, arch, c);
  if (arch == "gemma2" || arch == "gemma3") gemma_fields(f, arch, c);
  if (arch == "phi3") phi3_fields(f, c);
  if (arch == "smollm3") {
    json layers = json::array();
    for (int64_t i = 0; i < c["num_hidden_layers"].get<int64_t>(); ++i)
      layers.push_back((i + 1) % kSmolLM3NoRopeInterval != 0 ? 1 : 0);
    c["no_rope_layers"] = layers;
  }
  // Our own key for a Mistral window (llama.cpp's llama runtime has no sliding window).
  if (arch == "llama")
    if (auto w = f.int_or("llama.attention.sliding_window"); w && *w > 0) {
      c["model_type"] = "mistral";
      c["architectures"] = {hf_architecture_of("mistral")};
      c["sliding_window"] = *w;
    }
  if (auto bos = f.int_or("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = *bos;
  if (auto eos = f.int_or("tokenizer.ggml.eos_token_id")) c["eos_token_id"] = *eos;
  c["torch_dtype"] = "float32";
  return c;
}

ModelConfig gguf_model_config(const GgufFile& file) {
  const json j = gguf_model_config_json(file);
  try {
    return ModelConfig::from_json(j, file.path().string());
  } catch (const std::runtime_error& e) {
    static constexpr std::pair<std::string_view, std::string_view> kKeys[] = {
        {"hidden_size", "embedding_length"},
        {"intermediate_size", "feed_forward_length"},
        {"num_hidden_layers", "block_count"},
        {"num_attention_heads", "attention.head_count"},
        {"num_key_value_heads", "attention.head_count_kv"},
        {"head_dim", "attention.key_length"},
        {"max_position_embeddings", "context_length"},
        {"rms_norm_eps", "attention.layer_norm_rms_epsilon"},
        {"rope_theta", "rope.freq_base"},
        {"vocab_size", "vocab_size"}};
    const std::string what = e.what();
    for (const auto& [hf, key] : kKeys)
      if (what.find("\"" + std::string(hf) + "\"") != std::string::npos)
        throw std::runtime_error(what + " (from metadata '" +
                                 file.get_string("general.architecture") + "." + std::string(key) +
                                 "')");
    throw;
  }
}

Model load_gguf_model(const fs::path& path, const LoadOptions& options) {
  if (options.quantize_bits != 0)
    throw SettingError(
        "quantize", path.string() + ": a GGUF model keeps the types it is stored in; leave it 0");
  GgufFile file = GgufFile::open(path);
  Model m;
  m.dir = path;
  m.config = gguf_model_config(file);
  const ModelConfig& c = m.config;
  GgufLoader w(file, options.int8_decode_layout);
  const int64_t hidden = c.hidden_size, q_out = c.num_heads * c.head_dim,
                kv_out = c.num_kv_heads * c.head_dim, inter = c.intermediate_size;
  m.embed = w.matrix("token_embd.weight", c.vocab_size, hidden);
  if (!c.tie_word_embeddings) m.lm_head = w.matrix("output.weight", c.vocab_size, hidden);
  m.final_norm = w.vector("output_norm.weight", hidden);
  const bool permuted = gguf_permutes_qk(c.model_type);
  // [rows, cols, heads whose rows llama.cpp permuted] per Proj.
  const std::array<std::array<int64_t, 3>, kNumProj> shapes{
      {{q_out, hidden, permuted ? c.num_heads : 0},
       {kv_out, hidden, permuted ? c.num_kv_heads : 0},
       {kv_out, hidden, 0},
       {hidden, q_out, 0},
       {inter, hidden, 0},
       {inter, hidden, 0},
       {hidden, inter, 0},
       {q_out + 2 * kv_out, hidden, 0},
       {2 * inter, hidden, 0}}};
  m.layers.resize(static_cast<std::size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    auto& layer = m.layers[static_cast<std::size_t>(i)];
    for (const Proj p : block_projs(c)) {
      const auto& [rows, cols, heads] = shapes[static_cast<std::size_t>(p)];
      layer.at(p) = w.matrix(gguf_proj_tensor(p, i), rows, cols, heads);
    }
    if (c.attention_bias) {
      layer.q_bias = w.vector(block_tensor(i, "attn_q.bias"), q_out);
      layer.k_bias = w.vector(block_tensor(i, "attn_k.bias"), kv_out);
      layer.v_bias = w.vector(block_tensor(i, "attn_v.bias"), kv_out);
    }
    if (c.qk_norm) {
      layer.q_norm = w.vector(block_tensor(i, "attn_q_norm.weight"), c.head_dim);
      layer.k_norm = w.vector(block_tensor(i, "attn_k_norm.weight"), c.head_dim);
    }
    // Gemma's norms are stored as llama.cpp's converter writes them, 1 + weight already.
    layer.input_norm = w.vector(block_tensor(i, "attn_norm.weight"), hidden);
    if (c.sandwich_norms) {
      layer.post_attention_norm = w.vector(block_tensor(i, "post_attention_norm.weight"), hidden);
      layer.pre_ffn_norm = w.vector(block_tensor(i, "ffn_norm.weight"), hidden);
      layer.post_ffn_norm = w.vector(block_tensor(i, "post_ffw_norm.weight"), hidden);
    } else {
      layer.post_attention_norm = w.vector(block_tensor(i, "ffn_norm.weight"), hidden);
    }
  }
  m.rope_inv_freq = c.rope_inv_freq();
  // Llama 3 files carry their RoPE scaling as per-frequency divisors.
  if (w.has("rope_freqs.weight")) {
    const auto factors = w.vector("rope_freqs.weight", c.head_dim / 2);
    for (std::size_t i = 0; i < factors.size(); ++i) m.rope_inv_freq[i] /= factors[i];
  }
  set_family_constants(m);
  return m;
}

}  // namespace lora
