// The Llama-family forward pass over autograd ops, shared by training (recording tape), evaluation
// and generation (non-recording tape, KV cache).
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "autograd/ops.h"
#include "trainer/lora.h"
#include "trainer/model.h"

namespace lora {

// The adapters applied in a forward pass, stacked, each with its own scale multiplier.
struct AdapterStack {
  std::vector<LoraAdapter*> adapters;
  bool training = false;      // dropout on, gradients to A/B
  uint64_t dropout_seed = 0;  // per step; mixed with layer/proj ids
  // When set, one per adapter, used instead of each adapter's own `strength`: passes that share
  // adapters (the server's requests) each choose their strengths without touching the adapters.
  std::vector<float> strengths = {};
};

// What a KV cache holds: the f32 keys and values the forward computes, or IEEE halves (half the
// memory, and half the bytes a decode step reads over a long context, for keys and values rounded
// to 11 significant bits; llama.cpp's default).
enum class KVCacheType { F32, F16 };

struct KVCache {
  KVCacheType type = KVCacheType::F32;
  // Per layer, [max_tokens, kv_heads * head_dim] (batch 1): in k and v for F32, in half_k and
  // half_v for F16.
  std::vector<Tensor> k, v;
  std::vector<std::vector<uint16_t>> half_k, half_v;
  int64_t length = 0;  // tokens cached
  int64_t capacity = 0;
  int64_t layers() const;
  static KVCache create(const ModelConfig& c, int64_t max_tokens,
                        KVCacheType type = KVCacheType::F32);
};

struct ForwardOptions {
  bool grad_checkpoint = false;
  // Precision of the frozen base's products (forward and input gradient, the loss head included
  // when it runs on the same tape). LoRA weights, gradients and optimizer state stay f32.
  ComputeDType compute_dtype = ComputeDType::F32;
};

// Hidden states after the final norm, [batch * seq, hidden]. ids [batch * seq], batch-major.
// key_valid (optional, [batch * seq]) marks padding keys as 0.
ag::Var forward_hidden(ag::Tape& tape, const Model& model, const AdapterStack& adapters,
                       std::span<const int32_t> ids, int64_t batch, int64_t seq,
                       std::span<const uint8_t> key_valid = {}, const ForwardOptions& opts = {});

// Which rows of logits an incremental forward returns: every new token's, or the last one's
// alone (generation samples from the last row only; the head is a large share of a prompt's work:
// 27% of Qwen2.5-0.5B's weights).
enum class CachedLogits { All, Last };

// Batch-1 incremental forward for generation: appends ids to the cache, returns logits [n, vocab]
// (All) or [1, vocab] for the last id (Last). `activations` applies to the products of steps of a
// few tokens (GemvActivations).
Tensor forward_cached(const Model& model, const AdapterStack& adapters, KVCache& cache,
                      std::span<const int32_t> ids, CachedLogits which = CachedLogits::All,
                      GemvActivations activations = GemvActivations::F32);

// One sequence's place in a batched decode step: its adapters (strengths included), its cache
// (whose length is the new token's position) and the id to append.
struct DecodeRow {
  const AdapterStack* adapters = nullptr;
  KVCache* cache = nullptr;
  int32_t id = 0;
};

// One new token for each of several sequences in a single pass: the base's products run once
// over all rows (the weights are read once per step, not once per sequence); each row adds its own
// LoRA branches, rotates at its own position and attends over its own cache. Returns logits
// [rows, vocab], row i the same as forward_cached(rows[i]) would give.
Tensor forward_cached_batch(const Model& model, std::span<const DecodeRow> rows,
                            GemvActivations activations = GemvActivations::F32);

// Full-sequence logits [batch * seq, vocab], no grad.
Tensor forward_logits(const Model& model, const AdapterStack& adapters,
                      std::span<const int32_t> ids, int64_t batch, int64_t seq);

}  // namespace lora
