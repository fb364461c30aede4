#include "trainer/transformer.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <stdexcept>

#include "autograd/dora.h"
#include "autograd/kernels/kernels_attention.h"

namespace lora {
namespace {

// What every block of one forward pass shares.
struct PassContext {
  const Model& model;
  const AdapterStack& adapters;
  int64_t batch = 1;
  int64_t seq = 1;         // new tokens per sequence
  int64_t pos_offset = 0;  // position of the first new token (KV cache length)
};

// The LoRA branches of every enabled adapter on (layer, proj). Dropout and gradients only while
// training; the dropout seed differs per step, adapter, layer and projection.
std::vector<ag::LoraBranch> branches_for(const AdapterStack& stack, int64_t layer, Proj proj) {
  std::vector<ag::LoraBranch> out;
  for (std::size_t i = 0; i < stack.adapters.size(); ++i) {
    LoraAdapter* adapter = stack.adapters[i];
    if (!adapter || !adapter->enabled) continue;
    LoraModule* m = adapter->find(layer, proj);
    if (!m) continue;
    ag::LoraBranch br;
    br.A = &m->A;
    br.B = &m->B;
    br.scale = m->scale * (stack.strengths.empty() ? adapter->strength : stack.strengths.at(i));
    br.trainable = stack.training;
    br.dropout = stack.training ? adapter->config.dropout : 0.0f;
    br.dropout_seed = stack.dropout_seed ^ ((uint64_t(i) << 40) | (uint64_t(layer) << 8) |
                                            uint64_t(static_cast<int>(proj)));
    br.magnitude = m->is_dora() ? &m->magnitude : nullptr;
    out.push_back(br);
  }
  return out;
}

ag::Var project(ag::Tape& tape, ag::Var x, const PassContext& ctx, int64_t layer, Proj proj,
                const std::vector<float>& bias, ag::Var residual = nullptr) {
  const auto branches = branches_for(ctx.adapters, layer, proj);
  const FrozenWeight& w = ctx.model.layers[layer].at(proj);
  const std::vector<float>* b = bias.empty() ? nullptr : &bias;
  for (const ag::LoraBranch& br : branches) {
    if (!br.magnitude) continue;
    // DoRA rescales the whole adapted weight, so a second branch has no defined place in it.
    if (branches.size() != 1)
      throw std::runtime_error("layer " + std::to_string(layer) + " " +
                               std::string(proj_module_path(proj)) +
                               ": a DoRA adapter cannot be stacked with other adapters");
    return ag::dora_linear(tape, x, w, b, br, *br.magnitude, residual);
  }
  return ag::linear(tape, x, w, b, branches, residual);
}

struct AttentionInputs {
  ag::Var q, k, v;
};

// The q, k and v projections of the normed input: three linears, or Phi-3's one qkv_proj split
// into its [q; k; v] column blocks.
AttentionInputs project_qkv(ag::Tape& tape, ag::Var h, const PassContext& ctx, int64_t layer) {
  const ModelConfig& c = ctx.model.config;
  const LayerWeights& w = ctx.model.layers[layer];
  if (!c.fused_projections)  // braced: evaluated in order
    return {project(tape, h, ctx, layer, Proj::q, w.q_bias),
            project(tape, h, ctx, layer, Proj::k, w.k_bias),
            project(tape, h, ctx, layer, Proj::v, w.v_bias)};
  const int64_t widths[3] = {c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim,
                             c.num_kv_heads * c.head_dim};
  const auto parts = ag::split_columns(tape, project(tape, h, ctx, layer, Proj::qkv, {}), widths);
  return {parts[0], parts[1], parts[2]};
}

// input norm -> q/k/v projections (+ qwen2 biases) -> qwen3/gemma3 per-head q/k norm -> RoPE
// (with the layer's frequencies, on the rotary part of each head; SmolLM3 skips it on some
// layers).
AttentionInputs attention_inputs(ag::Tape& tape, ag::Var x, const PassContext& ctx, int64_t layer) {
  const ModelConfig& c = ctx.model.config;
  const LayerWeights& w = ctx.model.layers[layer];
  ag::Var h = ag::rmsnorm(tape, x, w.input_norm, c.hidden_size, c.rms_norm_eps);
  AttentionInputs in = project_qkv(tape, h, ctx, layer);
  if (c.qk_norm) {
    in.q = ag::rmsnorm(tape, in.q, w.q_norm, c.head_dim, c.rms_norm_eps);
    in.k = ag::rmsnorm(tape, in.k, w.k_norm, c.head_dim, c.rms_norm_eps);
  }
  if (!c.uses_rope(layer)) return in;
  // RoPE rotates in place: nothing else reads q and k before rotation, and backward needs neither.
  const auto& inv_freq = ctx.model.rope_inv_freq_of(layer, ctx.pos_offset + ctx.seq);
  const float scale = c.rope_attention_factor();
  in.q = ag::rope(tape, in.q, ctx.batch, ctx.seq, c.num_heads, c.head_dim, inv_freq, ctx.pos_offset,
                  /*reuse_input=*/true, scale);
  in.k = ag::rope(tape, in.k, ctx.batch, ctx.seq, c.num_kv_heads, c.head_dim, inv_freq,
                  ctx.pos_offset, /*reuse_input=*/true, scale);
  return in;
}

// The layer's sliding window and the family's score scale and soft-cap.
ag::AttentionScoring scoring_of(const ModelConfig& c, int64_t layer) {
  ag::AttentionScoring s;
  s.window = c.window_of(layer);
  if (c.query_pre_attn_scalar > 0) s.scale = 1.0f / std::sqrt(c.query_pre_attn_scalar);
  s.softcap = c.attn_logit_softcap;
  return s;
}

ag::Var gated_activation(ag::Tape& tape, const ModelConfig& c, ag::Var gate, ag::Var up) {
  return c.hidden_act == Activation::gelu_tanh ? ag::geglu(tape, gate, up)
                                               : ag::swiglu(tape, gate, up);
}

// act(gate_proj(h)) * up_proj(h): two linears, or Phi-3's one gate_up_proj split into its
// [gate; up] column blocks.
ag::Var mlp_hidden(ag::Tape& tape, ag::Var h, const PassContext& ctx, int64_t layer) {
  const ModelConfig& c = ctx.model.config;
  if (!c.fused_projections) {
    ag::Var gate = project(tape, h, ctx, layer, Proj::gate, {});
    ag::Var up = project(tape, h, ctx, layer, Proj::up, {});
    return gated_activation(tape, c, gate, up);
  }
  const int64_t widths[2] = {c.intermediate_size, c.intermediate_size};
  const auto parts =
      ag::split_columns(tape, project(tape, h, ctx, layer, Proj::gate_up, {}), widths);
  return gated_activation(tape, c, parts[0], parts[1]);
}

// Gemma's block tail: x + norm(o_proj(attn)), then x + norm(mlp(norm(x))).
ag::Var sandwich_block_output(ag::Tape& tape, ag::Var x, ag::Var attn, const PassContext& ctx,
                              int64_t layer) {
  const ModelConfig& c = ctx.model.config;
  const LayerWeights& w = ctx.model.layers[layer];
  const std::vector<float> no_bias;
  auto norm = [&](ag::Var v, const std::vector<float>& weight) {
    return ag::rmsnorm(tape, v, weight, c.hidden_size, c.rms_norm_eps);
  };
  ag::Var o = project(tape, attn, ctx, layer, Proj::o, no_bias);
  x = ag::add(tape, x, norm(o, w.post_attention_norm));
  ag::Var down = project(tape, mlp_hidden(tape, norm(x, w.pre_ffn_norm), ctx, layer), ctx, layer,
                         Proj::down, no_bias);
  return ag::add(tape, x, norm(down, w.post_ffn_norm));
}

// o_proj and the residual, then the gated MLP and its residual.
ag::Var block_output(ag::Tape& tape, ag::Var x, ag::Var attn, const PassContext& ctx,
                     int64_t layer) {
  const ModelConfig& c = ctx.model.config;
  if (c.sandwich_norms) return sandwich_block_output(tape, x, attn, ctx, layer);
  const LayerWeights& w = ctx.model.layers[layer];
  const std::vector<float> no_bias;
  // The residual sums happen inside the o and down projections (see ag::linear).
  x = project(tape, attn, ctx, layer, Proj::o, no_bias, x);
  ag::Var h = ag::rmsnorm(tape, x, w.post_attention_norm, c.hidden_size, c.rms_norm_eps);
  return project(tape, mlp_hidden(tape, h, ctx, layer), ctx, layer, Proj::down, no_bias, x);
}

// Token embeddings; Gemma scales them by sqrt(hidden) with the product rounded to the
// checkpoint's dtype, as its reference implementation does. No gradient reaches them.
ag::Var embed_tokens(ag::Tape& tape, const Model& model, std::span<const int32_t> ids) {
  ag::Var x = ag::embedding(tape, model.embed, ids);
  if (model.embed_scale == 0) return x;
  std::vector<float>& v = x->value.data;
  for (float& e : v) e *= model.embed_scale;
  if (model.embed_dtype == DType::F32) return x;
  std::vector<std::byte> stored(v.size() * dtype_size(model.embed_dtype));
  convert_from_f32(model.embed_dtype, v.data(), v.size(), stored.data());
  convert_to_f32(model.embed_dtype, stored.data(), v.size(), v.data());
  return x;
}

// Gemma 2's final logit soft-capping, in place on [n, vocab] logits.
Tensor cap_logits(const ModelConfig& c, Tensor logits) {
  if (c.final_logit_softcap > 0)
    for (float& l : logits.data) l = c.final_logit_softcap * std::tanh(l / c.final_logit_softcap);
  return logits;
}

void check_ids(const Model& model, std::span<const int32_t> ids, int64_t batch, int64_t seq) {
  if (batch <= 0 || seq <= 0 || static_cast<int64_t>(ids.size()) != batch * seq)
    throw std::invalid_argument("forward: " + std::to_string(ids.size()) + " token ids for batch " +
                                std::to_string(batch) + " x seq " + std::to_string(seq));
  if (model.layers.size() != static_cast<std::size_t>(model.config.num_layers))
    throw std::invalid_argument("forward: model has " + std::to_string(model.layers.size()) +
                                " layers, config says " + std::to_string(model.config.num_layers));
}

}  // namespace

KVCache KVCache::create(const ModelConfig& c, int64_t max_tokens) {
  if (max_tokens <= 0)
    throw std::invalid_argument("KV cache needs a positive capacity, got " +
                                std::to_string(max_tokens));
  KVCache cache;
  cache.capacity = max_tokens;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    cache.k.emplace_back(std::vector<int64_t>{max_tokens, c.num_kv_heads * c.head_dim});
    cache.v.emplace_back(std::vector<int64_t>{max_tokens, c.num_kv_heads * c.head_dim});
  }
  return cache;
}

ag::Var forward_hidden(ag::Tape& tape, const Model& model, const AdapterStack& adapters,
                       std::span<const int32_t> ids, int64_t batch, int64_t seq,
                       std::span<const uint8_t> key_valid, const ForwardOptions& opts) {
  check_ids(model, ids, batch, seq);
  const ModelConfig& c = model.config;
  tape.set_compute_dtype(opts.compute_dtype);
  ag::Var x = embed_tokens(tape, model, ids);
  // The block may run again in backward (checkpointing): it owns copies of the mask and stack.
  auto mask = std::make_shared<const std::vector<uint8_t>>(key_valid.begin(), key_valid.end());
  auto stack = std::make_shared<const AdapterStack>(adapters);
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    auto block = [&model, stack, mask, batch, seq, layer](ag::Tape& t, ag::Var in) {
      const ModelConfig& c = model.config;
      const PassContext ctx{model, *stack, batch, seq, 0};
      const AttentionInputs qkv = attention_inputs(t, in, ctx, layer);
      ag::Var attn = ag::attention(t, qkv.q, qkv.k, qkv.v, batch, seq, seq, c.num_heads,
                                   c.num_kv_heads, c.head_dim, *mask, scoring_of(c, layer));
      return block_output(t, in, attn, ctx, layer);
    };
    x = opts.grad_checkpoint && tape.recording() ? ag::checkpoint(tape, x, block) : block(tape, x);
  }
  return ag::rmsnorm(tape, x, model.final_norm, c.hidden_size, c.rms_norm_eps);
}

Tensor forward_cached(const Model& model, const AdapterStack& adapters, KVCache& cache,
                      std::span<const int32_t> ids) {
  const ModelConfig& c = model.config;
  const int64_t n = static_cast<int64_t>(ids.size());
  check_ids(model, ids, 1, n);
  if (cache.k.size() != model.layers.size())
    throw std::invalid_argument("forward_cached: KV cache made for " +
                                std::to_string(cache.k.size()) + " layers, model has " +
                                std::to_string(model.layers.size()));
  if (cache.length + n > cache.capacity)
    throw std::length_error("forward_cached: " + std::to_string(cache.length) + " cached + " +
                            std::to_string(n) + " new tokens exceed the KV cache capacity of " +
                            std::to_string(cache.capacity));
  ag::Tape tape(/*record=*/false);
  const PassContext ctx{model, adapters, 1, n, cache.length};
  const int64_t kv_width = c.num_kv_heads * c.head_dim;
  const int64_t total = cache.length + n;
  ag::Var x = embed_tokens(tape, model, ids);
  for (int64_t layer = 0; layer < c.num_layers; ++layer) {
    const AttentionInputs qkv = attention_inputs(tape, x, ctx, layer);
    std::copy(qkv.k->value.data.begin(), qkv.k->value.data.end(),
              cache.k[layer].ptr() + cache.length * kv_width);
    std::copy(qkv.v->value.data.begin(), qkv.v->value.data.end(),
              cache.v[layer].ptr() + cache.length * kv_width);
    // Attend straight from the cache buffers: no copy of the cached keys per token.
    const ag::AttentionScoring scoring = scoring_of(c, layer);
    const kernels::AttentionShape shape{1,
                                        n,
                                        total,
                                        c.num_heads,
                                        c.num_kv_heads,
                                        c.head_dim,
                                        scoring.window,
                                        scoring.scale,
                                        scoring.softcap};
    Tensor attn({n, c.num_heads * c.head_dim});
    std::vector<float> lse(static_cast<std::size_t>(c.num_heads * n));
    kernels::attention_forward(qkv.q->value.ptr(), cache.k[layer].ptr(), cache.v[layer].ptr(),
                               shape, nullptr, attn.ptr(), lse.data());
    x = block_output(tape, x, tape.constant(std::move(attn)), ctx, layer);
  }
  cache.length = total;
  ag::Var h = ag::rmsnorm(tape, x, model.final_norm, c.hidden_size, c.rms_norm_eps);
  return cap_logits(c, ag::head_logits(model.head(), h->value));
}

Tensor forward_logits(const Model& model, const AdapterStack& adapters,
                      std::span<const int32_t> ids, int64_t batch, int64_t seq) {
  ag::Tape tape(/*record=*/false);
  ag::Var h = forward_hidden(tape, model, adapters, ids, batch, seq);
  return cap_logits(model.config, ag::head_logits(model.head(), h->value));
}

}  // namespace lora
