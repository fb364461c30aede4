// The differentiable ops. Each records its backward on the tape (when the tape records) next to
// its forward, in autograd/ops_*.cpp. Activations are 2-D [tokens, features] row-major, tokens
// ordered batch-major (row = b * seq + t).
#pragma once
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "autograd/frozen_weight.h"
#include "autograd/tape.h"

namespace lora::ag {

// One LoRA branch on a linear: y += scale * dropout(x) A^T B^T, A [r, in], B [out, r].
struct LoraBranch {
  Parameter* A = nullptr;
  Parameter* B = nullptr;
  float scale = 1.0f;
  float dropout = 0.0f;            // probability of zeroing an input element (training only)
  uint64_t dropout_seed = 0;       // the mask is a pure function of (seed, element index)
  bool trainable = true;           // false: forward only, no grads to A/B (runtime adapters)
  Parameter* magnitude = nullptr;  // DoRA's m [out] (autograd/dora.h: dora_linear); null for LoRA
};

// x [n, in] -> [n, out] = x W^T (+ bias) + sum of LoRA branches. The base never gets a gradient;
// W + scale*B*A is never formed (the LoRA path is rank first).
// With `residual` ([n, out]) the op returns residual + that, the residual connection of the o and
// down projections fused in: no separate sum node is kept for backward.
Var linear(Tape& tape, Var x, const FrozenWeight& w, const std::vector<float>* bias,
           std::span<const LoraBranch> lora, Var residual = nullptr);

// One of several linears of the same input (linears()).
struct LinearOf {
  const FrozenWeight* w = nullptr;
  const std::vector<float>* bias = nullptr;
  std::span<const LoraBranch> lora;
};
// linear() of each, on one x. A pass that keeps no gradient, over a few rows (a decode step's q,
// k and v; gate and up), runs the frozen products in one pass of the thread team (frozen_gemv).
std::vector<Var> linears(Tape& tape, Var x, std::span<const LinearOf> each);

// Full fine-tuning's linear: x [n, in] -> x W^T (+ b) (+ residual) with W [out, in] and b [out]
// trainable f32 values. With `trains` backward adds dW = g^T x and db = sum of g's rows into their
// gradients; without it they act as frozen weights (inference, evaluation).
Var dense_linear(Tape& tape, Var x, Parameter& w, Parameter* bias, bool trains,
                 Var residual = nullptr);

// Rows of `table` picked by ids: [ids.size(), table.cols]. No gradient (frozen table).
Var embedding(Tape& tape, const FrozenWeight& table, std::span<const int32_t> ids);

// y = x * rsqrt(mean(x^2) + eps) * weight over the last `dim` features of each row;
// x's numel must be a multiple of dim (used per head for q/k norm).
Var rmsnorm(Tape& tape, Var x, std::span<const float> weight, int64_t dim, float eps);

// rmsnorm with a trainable weight (full fine-tuning): with `trains` backward also adds
// dw_j = sum over groups of g_j * x_j * inv_rms into weight.grad.
Var rmsnorm(Tape& tape, Var x, Parameter& weight, int64_t dim, float eps, bool trains);

// Rotary embedding (rotate_half convention) on x [batch * seq, heads * head_dim];
// position of row (b, t) = pos_offset + t. inv_freq has rotary_dim / 2 entries (rotary_dim <=
// head_dim): the first rotary_dim features of each head rotate, the rest pass through (Phi-3's
// partial rotary). cos and sin are multiplied by `scale` (LongRoPE's attention factor).
// With reuse_input the rotation happens in x's storage and x's value is gone afterwards (its shape
// stays): for an x that nothing else reads, such as the q and k projections' outputs, whose copies
// would otherwise live until backward.
Var rope(Tape& tape, Var x, int64_t batch, int64_t seq, int64_t heads, int64_t head_dim,
         std::span<const float> inv_freq, int64_t pos_offset = 0, bool reuse_input = false,
         float scale = 1.0f);

// How a layer scores keys beyond plain causal softmax(q k / sqrt(head_dim)).
struct AttentionScoring {
  int64_t window = 0;  // sliding window in keys, the query's own included (0 = none)
  float scale = 0;     // score scale (0 = 1 / sqrt(head_dim); Gemma: query_pre_attn_scalar^-0.5)
  float softcap = 0;   // scores -> softcap * tanh(scores / softcap) (Gemma 2); 0 = off
};

// Causal grouped-query attention. q [batch * seq_q, heads * head_dim];
// k, v [batch * seq_k, kv_heads * head_dim] with seq_k >= seq_q; query t sits at key position
// (seq_k - seq_q) + t and sees keys 0..that position. Optional per-token key mask (padding):
// key_valid[b * seq_k + j] == 0 hides key j of sequence b. Output [batch * seq_q, heads *
// head_dim]. Fused: backward recomputes the scores instead of storing [seq, seq] per head.
Var attention(Tape& tape, Var q, Var k, Var v, int64_t batch, int64_t seq_q, int64_t seq_k,
              int64_t heads, int64_t kv_heads, int64_t head_dim,
              std::span<const uint8_t> key_valid = {}, const AttentionScoring& scoring = {});

// The column blocks of x [n, sum(widths)], one [n, widths[i]] output each, in order: the q/k/v
// or gate/up parts of a fused projection. Backward adds each block's gradient into its columns.
std::vector<Var> split_columns(Tape& tape, Var x, std::span<const int64_t> widths);

// silu(gate) * up, elementwise.
Var swiglu(Tape& tape, Var gate, Var up);

// gelu_tanh(gate) * up, elementwise (GeGLU with the tanh-approximated GELU).
Var geglu(Tape& tape, Var gate, Var up);

// a + b, same shape.
Var add(Tape& tape, Var a, Var b);

// Token cross-entropy through a frozen output head, fused and chunked so the [n, vocab] logits
// never exist at once: returns the scalar sum_i weight_i * CE(hidden_i W^T, target_i) / normalizer.
// weight_i is 0 for masked positions. Rows with weight 0 cost no backward work. With
// logit_softcap > 0 the logits are cap * tanh(logits / cap) (Gemma 2's final soft-capping).
Var cross_entropy_head(Tape& tape, Var hidden, const FrozenWeight& head,
                       std::span<const int32_t> targets, std::span<const float> weights,
                       float normalizer, float logit_softcap = 0);

// Per-row logits of the head (no grad): [n, vocab]. For generation and evaluation.
Tensor head_logits(const FrozenWeight& head, const Tensor& hidden,
                   GemvActivations activations = GemvActivations::F32);

// Gradient checkpointing: runs `block` on x without keeping its intermediates; backward runs it
// again on a recording tape of its own and backpropagates through that.
Var checkpoint(Tape& tape, Var x, const std::function<Var(Tape&, Var)>& block);

}  // namespace lora::ag
