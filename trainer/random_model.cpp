#include "trainer/random_model.h"

#include <cmath>
#include <random>
#include <stdexcept>

#include "autograd/quant.h"

namespace lora {
namespace {

class Filler {
 public:
  explicit Filler(uint64_t seed) : rng_(seed) {}
  std::vector<float> uniform(int64_t n, double lo, double hi) {
    std::vector<float> v(static_cast<std::size_t>(n));
    for (float& x : v) x = float(lo + (hi - lo) * (double(rng_() >> 11) * 0x1.0p-53));
    return v;
  }

 private:
  std::mt19937_64 rng_;
};

FrozenWeight random_linear(Filler& fill, int64_t rows, int64_t cols, int bits, int group_size) {
  const double bound = 1.0 / std::sqrt(double(cols));
  std::vector<float> w = fill.uniform(rows * cols, -bound, bound);
  if (bits > 0 && quantizable(cols, bits, group_size))
    return FrozenWeight::from_quantized(quantize(w, rows, cols, bits, group_size));
  return FrozenWeight::from_f32(std::move(w), rows, cols);
}

}  // namespace

Model make_random_model(const ModelConfig& config, uint64_t seed, int quantize_bits,
                        int group_size) {
  const ModelConfig& c = config;
  if (c.hidden_size <= 0 || c.num_heads <= 0 || c.num_kv_heads <= 0 || c.head_dim <= 0 ||
      c.num_heads % c.num_kv_heads != 0 || c.vocab_size <= 0 || c.intermediate_size <= 0)
    throw std::invalid_argument("make_random_model: incomplete or inconsistent config");
  Filler fill(seed);
  Model m;
  m.config = c;
  m.embed = FrozenWeight::from_f32(fill.uniform(c.vocab_size * c.hidden_size, -1.0, 1.0),
                                   c.vocab_size, c.hidden_size);
  if (!c.tie_word_embeddings)
    m.lm_head = random_linear(fill, c.vocab_size, c.hidden_size, quantize_bits, group_size);
  m.final_norm = fill.uniform(c.hidden_size, 0.9, 1.1);
  const int64_t q_width = c.num_heads * c.head_dim, kv_width = c.num_kv_heads * c.head_dim;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    LayerWeights w;
    const int64_t shapes[kNumProj][2] = {{q_width, c.hidden_size},
                                         {kv_width, c.hidden_size},
                                         {kv_width, c.hidden_size},
                                         {c.hidden_size, q_width},
                                         {c.intermediate_size, c.hidden_size},
                                         {c.intermediate_size, c.hidden_size},
                                         {c.hidden_size, c.intermediate_size},
                                         {q_width + 2 * kv_width, c.hidden_size},
                                         {2 * c.intermediate_size, c.hidden_size}};
    for (const Proj proj : block_projs(c)) {
      const int p = static_cast<int>(proj);
      w.proj[p] = random_linear(fill, shapes[p][0], shapes[p][1], quantize_bits, group_size);
    }
    if (c.attention_bias) {
      w.q_bias = fill.uniform(q_width, -0.1, 0.1);
      w.k_bias = fill.uniform(kv_width, -0.1, 0.1);
      w.v_bias = fill.uniform(kv_width, -0.1, 0.1);
    }
    w.input_norm = fill.uniform(c.hidden_size, 0.9, 1.1);
    w.post_attention_norm = fill.uniform(c.hidden_size, 0.9, 1.1);
    if (c.qk_norm) {
      w.q_norm = fill.uniform(c.head_dim, 0.9, 1.1);
      w.k_norm = fill.uniform(c.head_dim, 0.9, 1.1);
    }
    if (c.sandwich_norms) {
      w.pre_ffn_norm = fill.uniform(c.hidden_size, 0.9, 1.1);
      w.post_ffn_norm = fill.uniform(c.hidden_size, 0.9, 1.1);
    }
    m.layers.push_back(std::move(w));
  }
  const int64_t rotary = c.rotary_dim > 0 ? c.rotary_dim : c.head_dim;
  for (int64_t i = 0; i < rotary / 2; ++i)
    m.rope_inv_freq.push_back(
        float(1.0 / std::pow(double(c.rope_theta), double(2 * i) / double(rotary))));
  set_family_constants(m);
  return m;
}

}  // namespace lora
