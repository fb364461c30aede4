#include "trainer/transformer.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <stdexcept>

#include "autograd/dora.h"
#include "autograd/dtype.h"
#include "autograd/kernels/kernels_attention.h"
#include "autograd/kernels/kernels_rope.h"

namespace lora {
namespace {

// What every block of one forward pass shares.
struct PassContext {
  const Model& model;
  const AdapterStack& adapters;
  int64_t batch = 1;
  int64_t seq = 1;         // new tokens per sequence
  int64_t pos_offset = 0;  // position of the first new token (KV cache length)
  // A batched decode step: row i is one new token of rows[i]'s sequence, with its own adapters
  // and position (batch, seq and pos_offset are then unused).
  std::span<const DecodeRow> rows = {};
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

ag::Var project_rows(ag::Tape& tape, ag::Var x, const PassContext& ctx, int64_t layer, Proj proj,
                     const std::vector<float>& bias, ag::Var residual);

// The enabled adapter's fully fine-tuned copy of `layer`, or null (the base's block). Full
// fine-tuning replaces the block's weights, so it has no strength to scale.
TrainedBlock* trained_block(const AdapterStack& stack, int64_t layer) {
  for (std::size_t i = 0; i < stack.adapters.size(); ++i) {
    LoraAdapter* adapter = stack.adapters[i];
    if (!adapter || !adapter->enabled || adapter->blocks.empty()) continue;
    TrainedBlock* block = adapter->find_block(layer);
    if (!block) continue;
    const float strength = stack.strengths.empty() ? adapter->strength : stack.strengths.at(i);
    if (strength != 1.0f)
      throw std::runtime_error("layer " + std::to_string(layer) +
                               ": a fully fine-tuned model replaces the base's weights and has no "
                               "strength other than 1 (got " +
                               std::to_string(strength) + ")");
    return block;
  }
  return nullptr;
}

// A block norm: the trained weight in a fully fine-tuned block, else the base's.
ag::Var block_norm(ag::Tape& tape, ag::Var x, const PassContext& ctx, int64_t layer,
                   BlockTensor which, const std::vector<float>& base, int64_t dim) {
  const float eps = ctx.model.config.rms_norm_eps;
  if (TrainedBlock* b = trained_block(ctx.adapters, layer))
    return ag::rmsnorm(tape, x, b->at(which), dim, eps, ctx.adapters.training);
  return ag::rmsnorm(tape, x, base, dim, eps);
}

ag::Var project(ag::Tape& tape, ag::Var x, const PassContext& ctx, int64_t layer, Proj proj,
                const std::vector<float>& bias, ag::Var residual = nullptr) {
  if (!ctx.rows.empty()) return project_rows(tape, x, ctx, layer, proj, bias, residual);
  const auto branches = branches_for(ctx.adapters, layer, proj);
  if (TrainedBlock* block = trained_block(ctx.adapters, layer)) {
    if (!branches.empty())
      throw std::runtime_error("layer " + std::to_string(layer) + " " +
                               std::string(proj_module_path(proj)) +
                               ": a LoRA adapter cannot be stacked on a fully fine-tuned block");
    const auto bias_of = block_bias(proj);
    ag::Parameter* b = bias_of && block->has(*bias_of) ? &block->at(*bias_of) : nullptr;
    return ag::dense_linear(tape, x, block->at(block_linear(proj)), b, ctx.adapters.training,
                            residual);
  }
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

// Projections of one input: project() each, or where they are plain linears (a single sequence,
// the base's block, no DoRA) ag::linears, which runs a decode step's products together.
std::vector<ag::Var> project_together(ag::Tape& tape, ag::Var x, const PassContext& ctx,
                                      int64_t layer, std::span<const Proj> projs,
                                      std::span<const std::vector<float>* const> biases) {
  auto each_alone = [&] {
    std::vector<ag::Var> out;
    for (std::size_t i = 0; i < projs.size(); ++i)
      out.push_back(project(tape, x, ctx, layer, projs[i], *biases[i]));
    return out;
  };
  if (!ctx.rows.empty() || trained_block(ctx.adapters, layer)) return each_alone();
  std::vector<std::vector<ag::LoraBranch>> branches;
  for (const Proj proj : projs) branches.push_back(branches_for(ctx.adapters, layer, proj));
  const bool dora = std::any_of(branches.begin(), branches.end(), [](const auto& brs) {
    return std::any_of(brs.begin(), brs.end(),
                       [](const ag::LoraBranch& br) { return br.magnitude != nullptr; });
  });
  if (dora) return each_alone();
  std::vector<ag::LinearOf> each;
  for (std::size_t i = 0; i < projs.size(); ++i)
    each.push_back({&ctx.model.layers[layer].at(projs[i]), biases[i]->empty() ? nullptr : biases[i],
                    branches[i]});
  return ag::linears(tape, x, each);
}

// A batched decode step's projection: the base product once over every row, then each row's own
// LoRA branches rank first, as ag::linear computes them for one row. A row with a DoRA adapter
// (which rescales the whole adapted weight) runs its own product instead.
ag::Var project_rows(ag::Tape& tape, ag::Var x, const PassContext& ctx, int64_t layer, Proj proj,
                     const std::vector<float>& bias, ag::Var residual) {
  const FrozenWeight& w = ctx.model.layers[layer].at(proj);
  ag::Var y = ag::linear(tape, x, w, bias.empty() ? nullptr : &bias, {}, residual);
  const int64_t in = w.cols, out = w.rows;
  for (std::size_t row = 0; row < ctx.rows.size(); ++row) {
    const AdapterStack& stack = *ctx.rows[row].adapters;
    const auto branches = branches_for(stack, layer, proj);
    if (branches.empty()) continue;
    const float* x_row = x->value.ptr() + row * in;
    float* y_row = y->value.ptr() + row * out;
    const bool dora = std::any_of(branches.begin(), branches.end(),
                                  [](const ag::LoraBranch& br) { return br.magnitude; });
    if (dora) {
      const PassContext single{ctx.model, stack, 1, 1, ctx.rows[row].cache->length};
      auto row_of = [&](ag::Var v, int64_t width) {
        if (!v) return ag::Var{};
        const float* p = v->value.ptr() + row * width;
        Tensor t({1, width});
        std::copy(p, p + width, t.ptr());
        return tape.constant(std::move(t));
      };
      const ag::Var y1 =
          project(tape, row_of(x, in), single, layer, proj, bias, row_of(residual, out));
      std::copy(y1->value.data.begin(), y1->value.data.end(), y_row);
      continue;
    }
    for (const ag::LoraBranch& br : branches) {
      const int64_t r = br.A->value.dim(0);
      std::vector<float> u(static_cast<std::size_t>(r));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, int(r), int(in), 1.0f, x_row, int(in),
                  br.A->value.ptr(), int(in), 0.0f, u.data(), int(r));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 1, int(out), int(r), br.scale, u.data(),
                  int(r), br.B->value.ptr(), int(r), 1.0f, y_row, int(out));
    }
  }
  return y;
}

struct AttentionInputs {
  ag::Var q, k, v;
};

// RoPE for a batched decode step: each row at its own sequence's position, in place (a
// non-recording pass: nothing else reads q and k before rotation).
void rotate_rows(const AttentionInputs& in, const PassContext& ctx, int64_t layer) {
  const ModelConfig& c = ctx.model.config;
  for (std::size_t row = 0; row < ctx.rows.size(); ++row) {
    const int64_t position = ctx.rows[row].cache->length;
    const auto& inv_freq = ctx.model.rope_inv_freq_of(layer, position + 1);
    const kernels::RopeTable table(inv_freq, 1, position, c.rope_attention_factor());
    kernels::rope_rotate(in.q->value.ptr() + row * c.num_heads * c.head_dim, 1, 1, c.num_heads,
                         c.head_dim, table);
    kernels::rope_rotate(in.k->value.ptr() + row * c.num_kv_heads * c.head_dim, 1, 1,
                         c.num_kv_heads, c.head_dim, table);
  }
}

// The q, k and v projections of the normed input: three linears, or Phi-3's one qkv_proj split
// into its [q; k; v] column blocks.
AttentionInputs project_qkv(ag::Tape& tape, ag::Var h, const PassContext& ctx, int64_t layer) {
  const ModelConfig& c = ctx.model.config;
  const LayerWeights& w = ctx.model.layers[layer];
  if (!c.fused_projections) {
    const Proj projs[3] = {Proj::q, Proj::k, Proj::v};
    const std::vector<float>* biases[3] = {&w.q_bias, &w.k_bias, &w.v_bias};
    const auto qkv = project_together(tape, h, ctx, layer, projs, biases);
    return {qkv[0], qkv[1], qkv[2]};
  }
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
  ag::Var h = block_norm(tape, x, ctx, layer, BlockTensor::input_norm, w.input_norm, c.hidden_size);
  AttentionInputs in = project_qkv(tape, h, ctx, layer);
  if (c.qk_norm) {
    in.q = block_norm(tape, in.q, ctx, layer, BlockTensor::q_norm, w.q_norm, c.head_dim);
    in.k = block_norm(tape, in.k, ctx, layer, BlockTensor::k_norm, w.k_norm, c.head_dim);
  }
  if (!c.uses_rope(layer)) return in;
  if (!ctx.rows.empty()) {
    rotate_rows(in, ctx, layer);
    return in;
  }
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
    const Proj projs[2] = {Proj::gate, Proj::up};
    const std::vector<float> no_bias;
    const std::vector<float>* biases[2] = {&no_bias, &no_bias};
    const auto gate_up = project_together(tape, h, ctx, layer, projs, biases);
    return gated_activation(tape, c, gate_up[0], gate_up[1]);
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
  auto norm = [&](ag::Var v, BlockTensor which, const std::vector<float>& weight) {
    return block_norm(tape, v, ctx, layer, which, weight, c.hidden_size);
  };
  ag::Var o = project(tape, attn, ctx, layer, Proj::o, no_bias);
  x = ag::add(tape, x, norm(o, BlockTensor::post_attention_norm, w.post_attention_norm));
  ag::Var down = project(
      tape, mlp_hidden(tape, norm(x, BlockTensor::pre_ffn_norm, w.pre_ffn_norm), ctx, layer), ctx,
      layer, Proj::down, no_bias);
  return ag::add(tape, x, norm(down, BlockTensor::post_ffn_norm, w.post_ffn_norm));
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
  ag::Var h = block_norm(tape, x, ctx, layer, BlockTensor::post_attention_norm,
                         w.post_attention_norm, c.hidden_size);
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

// Runs `part` on a non-recording tape of its own, with `outer`'s profile and compute dtype, and
// returns the value it produced; every other node of that tape is freed on return.
template <class Part>
Tensor released_forward(const ag::Tape& outer, Part&& part) {
  ag::Tape scratch(/*record=*/false);
  scratch.set_profile(outer.profile(), outer.forward_phase());
  scratch.set_compute_dtype(outer.compute_dtype());
  scratch.set_gemv_activations(outer.gemv_activations());
  return std::move(part(scratch)->value);
}

void check_cache(const Model& model, const KVCache& cache, int64_t n) {
  if (cache.layers() != static_cast<int64_t>(model.layers.size()))
    throw std::invalid_argument("forward_cached: KV cache made for " +
                                std::to_string(cache.layers()) + " layers, model has " +
                                std::to_string(model.layers.size()));
  if (cache.length + n > cache.capacity)
    throw std::length_error("forward_cached: " + std::to_string(cache.length) + " cached + " +
                            std::to_string(n) + " new tokens exceed the KV cache capacity of " +
                            std::to_string(cache.capacity));
}

// Appends one sequence's n new keys and values to its cache (after its `length` cached ones) and
// attends its n queries over the cache buffers themselves (no copy of the cached keys per token),
// writing [n, heads * head_dim] to `out`. The caller advances `length` after the last layer.
void attend_cached(const ModelConfig& c, int64_t layer, KVCache& cache, const float* q,
                   const float* k, const float* v, int64_t n, float* out) {
  const int64_t kv_width = c.num_kv_heads * c.head_dim;
  const ag::AttentionScoring scoring = scoring_of(c, layer);
  const kernels::AttentionShape shape{1,
                                      n,
                                      cache.length + n,
                                      c.num_heads,
                                      c.num_kv_heads,
                                      c.head_dim,
                                      scoring.window,
                                      scoring.scale,
                                      scoring.softcap};
  std::vector<float> lse(static_cast<std::size_t>(c.num_heads * n));
  if (cache.type == KVCacheType::F32) {
    std::copy(k, k + n * kv_width, cache.k[layer].ptr() + cache.length * kv_width);
    std::copy(v, v + n * kv_width, cache.v[layer].ptr() + cache.length * kv_width);
    kernels::attention_forward(q, cache.k[layer].ptr(), cache.v[layer].ptr(), shape, nullptr, out,
                               lse.data());
    return;
  }
  uint16_t* half_k = cache.half_k[layer].data();
  uint16_t* half_v = cache.half_v[layer].data();
  const auto added = static_cast<std::size_t>(n * kv_width);
  convert_from_f32(DType::F16, k, added, half_k + cache.length * kv_width);
  convert_from_f32(DType::F16, v, added, half_v + cache.length * kv_width);
  const gemv::Kernels& vector_kernels = kernels::tile_kernels();
  if (n == 1 && kernels::cached_attention_fits(shape, vector_kernels)) {
    kernels::attention_forward_cached(q, {.half_k = half_k, .half_v = half_v}, shape, nullptr, out,
                                      lse.data(), vector_kernels);
    return;
  }
  // A prompt's rows (or a head the vector kernels do not take) attend over the cache widened.
  const std::size_t cached = static_cast<std::size_t>(shape.seq_k * kv_width);
  std::vector<float> wide_k(cached), wide_v(cached);
  convert_to_f32(DType::F16, half_k, cached, wide_k.data());
  convert_to_f32(DType::F16, half_v, cached, wide_v.data());
  kernels::attention_forward(q, wide_k.data(), wide_v.data(), shape, nullptr, out, lse.data());
}

// The final norm and the head on the last hidden states.
Tensor final_logits(const Model& model, Tensor hidden, GemvActivations activations) {
  const ModelConfig& c = model.config;
  ag::Tape tape(/*record=*/false);
  ag::Var h = ag::rmsnorm(tape, tape.constant(std::move(hidden)), model.final_norm, c.hidden_size,
                          c.rms_norm_eps);
  return cap_logits(c, ag::head_logits(model.head(), h->value, activations));
}

}  // namespace

KVCache KVCache::create(const ModelConfig& c, int64_t max_tokens, KVCacheType type) {
  if (max_tokens <= 0)
    throw std::invalid_argument("KV cache needs a positive capacity, got " +
                                std::to_string(max_tokens));
  KVCache cache;
  cache.capacity = max_tokens;
  cache.type = type;
  const int64_t width = c.num_kv_heads * c.head_dim;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (type == KVCacheType::F16) {
      cache.half_k.emplace_back(static_cast<std::size_t>(max_tokens * width));
      cache.half_v.emplace_back(static_cast<std::size_t>(max_tokens * width));
    } else {
      cache.k.emplace_back(std::vector<int64_t>{max_tokens, width});
      cache.v.emplace_back(std::vector<int64_t>{max_tokens, width});
    }
  }
  return cache;
}

int64_t KVCache::layers() const {
  return static_cast<int64_t>(type == KVCacheType::F16 ? half_k.size() : k.size());
}

ag::Var forward_hidden(ag::Tape& tape, const Model& model, const AdapterStack& adapters,
                       std::span<const int32_t> ids, int64_t batch, int64_t seq,
                       std::span<const uint8_t> key_valid, const ForwardOptions& opts) {
  check_ids(model, ids, batch, seq);
  const ModelConfig& c = model.config;
  tape.set_compute_dtype(opts.compute_dtype);
  // The block may run again in backward (checkpointing): it owns copies of the mask and stack.
  auto mask = std::make_shared<const std::vector<uint8_t>>(key_valid.begin(), key_valid.end());
  auto stack = std::make_shared<const AdapterStack>(adapters);
  auto block_of = [&model, &stack, &mask, batch, seq](int64_t layer) {
    return [&model, stack, mask, batch, seq, layer](ag::Tape& t, ag::Var in) {
      const ModelConfig& c = model.config;
      const PassContext ctx{model, *stack, batch, seq, 0};
      const AttentionInputs qkv = attention_inputs(t, in, ctx, layer);
      ag::Var attn = ag::attention(t, qkv.q, qkv.k, qkv.v, batch, seq, seq, c.num_heads,
                                   c.num_kv_heads, c.head_dim, *mask, scoring_of(c, layer));
      return block_output(t, in, attn, ctx, layer);
    };
  };
  if (!tape.recording()) {
    // Nothing will read a block's intermediates again: each block runs on a tape of its own that
    // frees them before the next one starts, and only the running hidden state is kept (a tape
    // holding every block's activations took 6x a checkpointed training step's memory).
    Tensor x = released_forward(tape, [&](ag::Tape& t) { return embed_tokens(t, model, ids); });
    for (int64_t layer = 0; layer < c.num_layers; ++layer)
      x = released_forward(tape, [&, block = block_of(layer)](ag::Tape& t) {
        return block(t, t.constant(std::move(x)));
      });
    return ag::rmsnorm(tape, tape.constant(std::move(x)), model.final_norm, c.hidden_size,
                       c.rms_norm_eps);
  }
  ag::Var x = embed_tokens(tape, model, ids);
  for (int64_t layer = 0; layer < c.num_layers; ++layer)
    x = opts.grad_checkpoint ? ag::checkpoint(tape, x, block_of(layer)) : block_of(layer)(tape, x);
  return ag::rmsnorm(tape, x, model.final_norm, c.hidden_size, c.rms_norm_eps);
}

Tensor forward_cached(const Model& model, const AdapterStack& adapters, KVCache& cache,
                      std::span<const int32_t> ids, CachedLogits which,
                      GemvActivations activations) {
  const ModelConfig& c = model.config;
  const int64_t n = static_cast<int64_t>(ids.size());
  check_ids(model, ids, 1, n);
  check_cache(model, cache, n);
  const PassContext ctx{model, adapters, 1, n, cache.length};
  // Each layer runs on a tape of its own (released_forward): its activations are freed before
  // the next layer's are made, so a prompt holds one layer's at a time (on one tape a long prompt
  // held every layer's, and the first prompt of a process page-faulted fresh memory for all).
  ag::Tape outer(/*record=*/false);
  outer.set_gemv_activations(activations);
  Tensor hidden =
      released_forward(outer, [&](ag::Tape& tape) { return embed_tokens(tape, model, ids); });
  for (int64_t layer = 0; layer < c.num_layers; ++layer)
    hidden = released_forward(outer, [&](ag::Tape& tape) {
      ag::Var x = tape.constant(std::move(hidden));
      const AttentionInputs qkv = attention_inputs(tape, x, ctx, layer);
      Tensor attn({n, c.num_heads * c.head_dim});
      attend_cached(c, layer, cache, qkv.q->value.ptr(), qkv.k->value.ptr(), qkv.v->value.ptr(), n,
                    attn.ptr());
      return block_output(tape, x, tape.constant(std::move(attn)), ctx, layer);
    });
  cache.length += n;
  if (which == CachedLogits::Last && n > 1) {
    Tensor last({1, c.hidden_size});
    const float* row = hidden.ptr() + (n - 1) * c.hidden_size;
    std::copy(row, row + c.hidden_size, last.ptr());
    hidden = std::move(last);
  }
  return final_logits(model, std::move(hidden), activations);
}

Tensor forward_cached_batch(const Model& model, std::span<const DecodeRow> rows,
                            GemvActivations activations) {
  const ModelConfig& c = model.config;
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<int32_t> ids;
  for (const DecodeRow& row : rows) {
    if (!row.adapters || !row.cache)
      throw std::invalid_argument("forward_cached_batch: a row without adapters or cache");
    check_cache(model, *row.cache, 1);
    ids.push_back(row.id);
  }
  check_ids(model, ids, n, 1);
  // The shared stack is unused: every projection takes its branches from the rows.
  const AdapterStack none;
  PassContext ctx{model, none, n, 1, 0};
  ctx.rows = rows;
  const int64_t q_width = c.num_heads * c.head_dim, kv_width = c.num_kv_heads * c.head_dim;
  ag::Tape outer(/*record=*/false);  // a tape per layer, as in forward_cached
  outer.set_gemv_activations(activations);
  Tensor hidden =
      released_forward(outer, [&](ag::Tape& tape) { return embed_tokens(tape, model, ids); });
  for (int64_t layer = 0; layer < c.num_layers; ++layer)
    hidden = released_forward(outer, [&](ag::Tape& tape) {
      ag::Var x = tape.constant(std::move(hidden));
      const AttentionInputs qkv = attention_inputs(tape, x, ctx, layer);
      Tensor attn({n, q_width});
      for (int64_t i = 0; i < n; ++i)
        attend_cached(c, layer, *rows[i].cache, qkv.q->value.ptr() + i * q_width,
                      qkv.k->value.ptr() + i * kv_width, qkv.v->value.ptr() + i * kv_width, 1,
                      attn.ptr() + i * q_width);
      return block_output(tape, x, tape.constant(std::move(attn)), ctx, layer);
    });
  for (const DecodeRow& row : rows) row.cache->length += 1;
  return final_logits(model, std::move(hidden), activations);
}

Tensor forward_logits(const Model& model, const AdapterStack& adapters,
                      std::span<const int32_t> ids, int64_t batch, int64_t seq) {
  ag::Tape tape(/*record=*/false);
  ag::Var h = forward_hidden(tape, model, adapters, ids, batch, seq);
  return cap_logits(model.config, ag::head_logits(model.head(), h->value));
}

}  // namespace lora
