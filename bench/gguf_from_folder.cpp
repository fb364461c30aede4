// Writes a Llama model folder (f32/bf16/f16 weights) as a llama.cpp GGUF file whose matrices are
// all one ggml type (Q4_0 for the generation bench: the same float weights as an MLX 4-bit copy
// of the folder). The tokenizer metadata is copied from another GGUF file (a SentencePiece
// vocabulary, e.g. stories260K's) and padded with unused tokens up to the model's vocabulary, so
// that llama.cpp loads the file and both tokenizers give the same ids for the same text.
//   build/bench/gguf_from_folder MODEL_DIR OUT.gguf TYPE TOKENIZER.gguf
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <string>
#include <vector>

#include "trainer/gguf_model.h"
#include "trainer/io/gguf_file.h"
#include "trainer/model.h"

namespace {

using namespace lora;

// llama.cpp's token type for a vocabulary slot no text maps to.
constexpr int64_t kUnusedToken = 5;

void copy_tokenizer(const GgufFile& from, int64_t vocab, GgufWriter& w) {
  for (const auto& key : from.metadata_order()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    GgufValue v = *from.find(key);
    if (key == "tokenizer.ggml.tokens")
      for (auto i = static_cast<int64_t>(v.strings.size()); i < vocab; ++i)
        v.strings.push_back("<unused" + std::to_string(i) + ">");
    else if (key == "tokenizer.ggml.scores")
      v.reals.resize(static_cast<std::size_t>(vocab), -1e9);
    else if (key == "tokenizer.ggml.token_type")
      v.integers.resize(static_cast<std::size_t>(vocab), kUnusedToken);
    if (v.array_size() > static_cast<std::size_t>(vocab))
      throw std::runtime_error(from.path().string() + ": " + key + " has more entries than the " +
                               std::to_string(vocab) + " of the model's vocabulary");
    w.set(key, std::move(v));
  }
}

// The matrix in `type`, rows in llama.cpp's order: for q/k (`qk_heads` > 0) GGUF row r holds the
// Hugging Face row gguf_qk_row_to_hf(r) (llama.cpp's converter permutes them for its RoPE).
std::vector<std::byte> ggml_bytes(const FrozenWeight& m, GgmlType type, int64_t qk_heads = 0) {
  const std::vector<float> f = m.to_f32();
  const uint64_t rb = ggml_row_bytes(type, m.cols);
  std::vector<std::byte> out(rb * static_cast<uint64_t>(m.rows));
  const int64_t head_dim = qk_heads > 0 ? m.rows / qk_heads : 0;
  for (int64_t r = 0; r < m.rows; ++r) {
    const int64_t src = qk_heads > 0 ? gguf_qk_row_to_hf(r, head_dim) : r;
    ggml_quantize_row(type, f.data() + src * m.cols, m.cols, out.data() + r * rb);
  }
  return out;
}

void add_vector(GgufWriter& w, const std::string& name, const std::vector<float>& v) {
  std::vector<std::byte> bytes(v.size() * sizeof(float));
  std::memcpy(bytes.data(), v.data(), bytes.size());
  w.add_tensor(name, GgmlType::F32, {static_cast<int64_t>(v.size())}, std::move(bytes));
}

void set_hyperparameters(const ModelConfig& c, GgufWriter& w) {
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "loracpp-bench");
  w.set_u32("llama.block_count", static_cast<uint32_t>(c.num_layers));
  w.set_u32("llama.context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.set_u32("llama.embedding_length", static_cast<uint32_t>(c.hidden_size));
  w.set_u32("llama.feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.set_u32("llama.attention.head_count", static_cast<uint32_t>(c.num_heads));
  w.set_u32("llama.attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  w.set_u32("llama.attention.key_length", static_cast<uint32_t>(c.head_dim));
  w.set_u32("llama.attention.value_length", static_cast<uint32_t>(c.head_dim));
  w.set_u32("llama.rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  w.set_f32("llama.rope.freq_base", static_cast<float>(c.rope_theta));
  w.set_f32("llama.attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.set_u32("llama.vocab_size", static_cast<uint32_t>(c.vocab_size));
}

void write_gguf(const Model& m, GgmlType type, const GgufFile& tokenizer,
                const std::filesystem::path& out) {
  const ModelConfig& c = m.config;
  if (c.model_type != "llama" || c.attention_bias || c.qk_norm || c.sandwich_norms)
    throw std::runtime_error("only plain Llama folders are written (model_type " + c.model_type +
                             ")");
  GgufWriter w;
  set_hyperparameters(c, w);
  copy_tokenizer(tokenizer, c.vocab_size, w);
  w.add_tensor("token_embd.weight", type, {c.vocab_size, c.hidden_size}, ggml_bytes(m.embed, type));
  if (m.lm_head)
    w.add_tensor("output.weight", type, {c.vocab_size, c.hidden_size},
                 ggml_bytes(*m.lm_head, type));
  add_vector(w, "output_norm.weight", m.final_norm);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeights& layer = m.layers[static_cast<std::size_t>(l)];
    for (const Proj proj : kSeparateProjs) {
      const FrozenWeight& f = layer.at(proj);
      const int64_t heads = proj == Proj::q ? c.num_heads : proj == Proj::k ? c.num_kv_heads : 0;
      w.add_tensor(gguf_proj_tensor(proj, l), type, {f.rows, f.cols}, ggml_bytes(f, type, heads));
    }
    const std::string b = "blk." + std::to_string(l) + ".";
    add_vector(w, b + "attn_norm.weight", layer.input_norm);
    add_vector(w, b + "ffn_norm.weight", layer.post_attention_norm);
  }
  w.write(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: %s MODEL_DIR OUT.gguf TYPE TOKENIZER.gguf\n", argv[0]);
    return 2;
  }
  try {
    const auto type = ggml_type_named(argv[3]);
    if (!type) throw std::runtime_error(std::string("unknown ggml type ") + argv[3]);
    const Model model = load_model(argv[1]);
    write_gguf(model, *type, GgufFile::open(argv[4]), argv[2]);
    std::printf("wrote %s\n", argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gguf_from_folder: %s\n", e.what());
    return 1;
  }
  return 0;
}
