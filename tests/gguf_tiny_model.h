// A complete GGUF model small enough to corrupt byte by byte: one llama (or qwen3) block with
// hidden size 8, a SentencePiece tokenizer of 16 pieces in the metadata, a chat template, and
// weights in F32 and F16. The malformed-GGUF tests and the GGUF fuzz seeds start from it.
#pragma once
#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/gguf_quant.h"
#include "gguf_test_util.h"
#include "trainer/io/gguf_file.h"

namespace lora::test {

// Position just past the first occurrence of `text` in a serialized file (its size when absent).
inline std::size_t gguf_after(const std::vector<std::byte>& b, const std::string& text) {
  const auto* p = reinterpret_cast<const char*>(b.data());
  const auto it = std::search(p, p + b.size(), text.begin(), text.end());
  return static_cast<std::size_t>(it - p) + (it == p + b.size() ? 0 : text.size());
}

// Overwrites the bytes at `pos` with `v`.
template <class T>
void gguf_poke(std::vector<std::byte>& b, std::size_t pos, T v) {
  std::memcpy(b.data() + pos, &v, sizeof(T));
}

inline std::vector<std::byte> tiny_gguf_tensor(GgmlType type, int64_t rows, int64_t cols,
                                               unsigned seed, float center = 0.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(center, 0.3f);
  std::vector<float> v(static_cast<std::size_t>(rows * cols));
  for (auto& x : v) x = nd(rng);
  std::vector<std::byte> out(ggml_row_bytes(type, cols) * static_cast<uint64_t>(rows));
  ggml_quantize_row(type, v.data(), rows * cols, out.data());
  return out;
}

// `architecture` is "llama" or "qwen3" (q/k norms).
inline GgufWriter tiny_gguf_model(const std::string& architecture = "llama") {
  constexpr int64_t kHidden = 8, kHeads = 2, kKvHeads = 1, kHeadDim = 4, kInter = 16;
  const std::vector<std::string> tokens = {"<unk>",
                                           "<s>",
                                           "</s>",
                                           "\xe2\x96\x81",
                                           "a",
                                           "b",
                                           "c",
                                           "\xe2\x96\x81"
                                           "a",
                                           "ab",
                                           "\xe2\x96\x81"
                                           "ab",
                                           "ba",
                                           "\xe2\x96\x81"
                                           "b",
                                           "abc",
                                           "cc",
                                           "<0x0A>",
                                           "<|user|>"};
  const auto vocab = static_cast<int64_t>(tokens.size());
  GgufWriter w;
  const std::string a = architecture;
  w.set_string("general.architecture", a);
  w.set_string("general.name", "tiny");
  w.set_u32(a + ".context_length", 64);
  w.set_u32(a + ".embedding_length", kHidden);
  w.set_u32(a + ".feed_forward_length", kInter);
  w.set_u32(a + ".block_count", 1);
  w.set_u32(a + ".attention.head_count", kHeads);
  w.set_u32(a + ".attention.head_count_kv", kKvHeads);
  w.set_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_f32(a + ".rope.freq_base", 10000.0f);
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_strings("tokenizer.ggml.tokens", tokens);
  std::vector<float> scores(tokens.size());
  std::vector<int32_t> types(tokens.size(), 1);
  for (std::size_t i = 0; i < tokens.size(); ++i) scores[i] = -static_cast<float>(i);
  types[0] = 2;
  types[1] = types[2] = 3;
  types[14] = 6;
  types[15] = 4;
  w.set_f32s("tokenizer.ggml.scores", scores);
  w.set_i32s("tokenizer.ggml.token_type", types);
  w.set_u32("tokenizer.ggml.bos_token_id", 1);
  w.set_u32("tokenizer.ggml.eos_token_id", 2);
  w.set_u32("tokenizer.ggml.unknown_token_id", 0);
  w.set_bool("tokenizer.ggml.add_bos_token", true);
  w.set_string("tokenizer.chat_template",
               "{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}");
  unsigned seed = 1;
  auto matrix = [&](const std::string& name, GgmlType t, int64_t rows, int64_t cols) {
    w.add_tensor(name, t, {rows, cols}, tiny_gguf_tensor(t, rows, cols, seed++));
  };
  auto norm = [&](const std::string& name, int64_t size) {
    w.add_tensor(name, GgmlType::F32, {size}, tiny_gguf_tensor(GgmlType::F32, 1, size, seed++, 1));
  };
  matrix("token_embd.weight", GgmlType::F32, vocab, kHidden);
  norm("output_norm.weight", kHidden);
  matrix("blk.0.attn_q.weight", GgmlType::F32, kHeads * kHeadDim, kHidden);
  matrix("blk.0.attn_k.weight", GgmlType::F32, kKvHeads * kHeadDim, kHidden);
  matrix("blk.0.attn_v.weight", GgmlType::F16, kKvHeads * kHeadDim, kHidden);
  matrix("blk.0.attn_output.weight", GgmlType::F16, kHidden, kHeads * kHeadDim);
  matrix("blk.0.ffn_gate.weight", GgmlType::F16, kInter, kHidden);
  matrix("blk.0.ffn_up.weight", GgmlType::F16, kInter, kHidden);
  matrix("blk.0.ffn_down.weight", GgmlType::F32, kHidden, kInter);
  norm("blk.0.attn_norm.weight", kHidden);
  norm("blk.0.ffn_norm.weight", kHidden);
  if (architecture == "qwen3") {
    norm("blk.0.attn_q_norm.weight", kHeadDim);
    norm("blk.0.attn_k_norm.weight", kHeadDim);
  }
  return w;
}

// One [2, 256] tensor of every ggml type read (valid blocks, small finite scales) and metadata of
// every value type: the container's and the dequantizers' seed.
inline GgufWriter gguf_every_type() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_bool("test.bool", true);
  w.set_i32s("test.ints", std::vector<int32_t>{1, -2, 3});
  w.set_f32s("test.reals", std::vector<float>{0.5f, -1.0f});
  w.set_strings("test.strings", {"a", "",
                                 "\xe2\x96\x81"
                                 "b"});
  unsigned seed = 1;
  for (GgmlType t : kAllGgmlTypes)
    w.add_tensor(std::string("t.") + std::string(ggml_type_name(t)), t, {2, 256},
                 random_ggml_bytes(t, 2, 256, seed++));
  return w;
}

}  // namespace lora::test
