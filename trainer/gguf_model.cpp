#include "trainer/gguf_model.h"

#include <array>
#include <cstring>
#include <fstream>
#include <stdexcept>

#include "autograd/tensor.h"
#include "trainer/setting_error.h"

namespace lora {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

// llama.cpp's names; its phi3 files hold [gate; up] in ffn_up (not read here yet).
constexpr std::array<std::string_view, kNumProj> kGgufProj{"attn_q",      "attn_k",   "attn_v",
                                                           "attn_output", "ffn_gate", "ffn_up",
                                                           "ffn_down",    "attn_qkv", "ffn_up"};

[[noreturn]] void bad(const fs::path& path, const std::string& what) {
  throw std::runtime_error(path.string() + ": " + what);
}

// Reads the file's tensors into the model's frozen formats, checking every shape.
class GgufLoader {
 public:
  explicit GgufLoader(const GgufFile& file) : file_(file) {}

  bool has(const std::string& name) const { return file_.contains_tensor(name); }

  // A [rows, cols] matrix in its own ggml type. With `qk_heads` (llama q/k), the rows are put
  // back in Hugging Face order: a copy of the row bytes, the blocks themselves untouched.
  FrozenWeight matrix(const std::string& name, int64_t rows, int64_t cols,
                      int64_t qk_heads = 0) const {
    const GgufTensorInfo& t = info(name, {rows, cols});
    if (qk_heads == 0)
      return FrozenWeight::from_ggml(GgmlMatrix{rows, cols, t.type, file_.shared_bytes(t)});
    const auto src = file_.bytes(t);
    const uint64_t rb = ggml_row_bytes(t.type, cols);
    std::vector<std::byte> hf(src.size());
    const int64_t head_dim = rows / qk_heads;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t to = gguf_qk_row_to_hf(r, head_dim);
      std::memcpy(hf.data() + to * rb, src.data() + r * rb, rb);
    }
    return FrozenWeight::from_ggml(GgmlMatrix::owning(rows, cols, t.type, hf));
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

  const GgufFile& file_;
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

bool gguf_permutes_qk(const std::string& architecture) { return architecture == "llama"; }

int64_t gguf_qk_row_to_hf(int64_t row, int64_t head_dim) {
  const int64_t head = row / head_dim, within = row % head_dim, half = head_dim / 2;
  return head * head_dim + (within % 2) * half + within / 2;
}

std::string gguf_proj_tensor(Proj p, int64_t layer) {
  return block_tensor(layer, std::string(kGgufProj[static_cast<int>(p)]) + ".weight");
}

json gguf_model_config_json(const GgufFile& f) {
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama" && arch != "qwen2" && arch != "qwen3")
    bad(f.path(), "architecture '" + arch + "' is not supported (llama, qwen2, qwen3 are)");
  auto key = [&](const char* k) { return arch + "." + k; };
  json c;
  c["model_type"] = arch;
  c["architectures"] = {arch == "llama"   ? "LlamaForCausalLM"
                        : arch == "qwen2" ? "Qwen2ForCausalLM"
                                          : "Qwen3ForCausalLM"};
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
  c["vocab_size"] = vocab ? *vocab : static_cast<int64_t>(tokens->array_size());
  c["tie_word_embeddings"] = !f.contains_tensor("output.weight");
  c["hidden_act"] = "silu";
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
                                 j.at("model_type").get<std::string>() + "." + std::string(key) +
                                 "')");
    throw;
  }
}

Model load_gguf_model(const fs::path& path, const LoadOptions& options) {
  if (options.quantize_bits != 0)
    throw SettingError(
        "quantize", path.string() + ": a GGUF model keeps the types it is stored in; leave it 0");
  const GgufFile file = GgufFile::open(path);
  Model m;
  m.dir = path;
  m.config = gguf_model_config(file);
  const ModelConfig& c = m.config;
  const GgufLoader w(file);
  const int64_t hidden = c.hidden_size, q_out = c.num_heads * c.head_dim,
                kv_out = c.num_kv_heads * c.head_dim, inter = c.intermediate_size;
  m.embed = w.matrix("token_embd.weight", c.vocab_size, hidden);
  if (!c.tie_word_embeddings) m.lm_head = w.matrix("output.weight", c.vocab_size, hidden);
  m.final_norm = w.vector("output_norm.weight", hidden);
  const bool permuted = gguf_permutes_qk(c.model_type);
  const std::array<std::array<int64_t, 3>, kSeparateProjs.size()> shapes{
      {{q_out, hidden, permuted ? c.num_heads : 0},
       {kv_out, hidden, permuted ? c.num_kv_heads : 0},
       {kv_out, hidden, 0},
       {hidden, q_out, 0},
       {inter, hidden, 0},
       {inter, hidden, 0},
       {hidden, inter, 0}}};
  m.layers.resize(static_cast<std::size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    auto& layer = m.layers[static_cast<std::size_t>(i)];
    for (std::size_t p = 0; p < kSeparateProjs.size(); ++p)
      layer.proj[p] = w.matrix(gguf_proj_tensor(kSeparateProjs[p], i), shapes[p][0], shapes[p][1],
                               shapes[p][2]);
    if (c.attention_bias) {
      layer.q_bias = w.vector(block_tensor(i, "attn_q.bias"), q_out);
      layer.k_bias = w.vector(block_tensor(i, "attn_k.bias"), kv_out);
      layer.v_bias = w.vector(block_tensor(i, "attn_v.bias"), kv_out);
    }
    if (c.qk_norm) {
      layer.q_norm = w.vector(block_tensor(i, "attn_q_norm.weight"), c.head_dim);
      layer.k_norm = w.vector(block_tensor(i, "attn_k_norm.weight"), c.head_dim);
    }
    layer.input_norm = w.vector(block_tensor(i, "attn_norm.weight"), hidden);
    layer.post_attention_norm = w.vector(block_tensor(i, "ffn_norm.weight"), hidden);
  }
  m.rope_inv_freq = c.rope_inv_freq();
  // Llama 3 files carry their RoPE scaling as per-frequency divisors.
  if (w.has("rope_freqs.weight")) {
    const auto factors = w.vector("rope_freqs.weight", c.head_dim / 2);
    for (std::size_t i = 0; i < factors.size(); ++i) m.rope_inv_freq[i] /= factors[i];
  }
  return m;
}

}  // namespace lora
