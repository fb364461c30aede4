// The transformer forward/backward on small random models: gradient checkpointing changes
// nothing, runs are bit-reproducible, the KV-cached path matches the full forward, adapters can
// be switched off, and LoRA gradients through the whole model agree with finite differences.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "autograd/dtype.h"
#include "support/heap_counter.h"
#include "trainer/random_model.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

ModelConfig tiny_config(const std::string& type) {
  ModelConfig c;
  c.model_type = type;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 40;
  c.rms_norm_eps = 1e-6f;
  c.tie_word_embeddings = type == "llama";
  c.attention_bias = type == "qwen2";
  c.qk_norm = type == "qwen3";
  // The families, with windows shorter than the test sequences (8 tokens) and caps low enough
  // to bend these small scores.
  const bool gemma = type == "gemma3_text" || type == "gemma2";
  if (gemma) {
    c.hidden_act = Activation::gelu_tanh;
    c.sandwich_norms = c.scale_embeddings = c.tie_word_embeddings = true;
    c.query_pre_attn_scalar = 12.0f;
    c.sliding_window = 3;
    c.sliding_layers = {1, 0};
  }
  if (type == "gemma3_text") {
    c.qk_norm = true;
    c.rope_theta = 1e6f;
    c.rope_local_theta = 1e4f;
  }
  if (type == "gemma2") {
    c.attn_logit_softcap = 0.5f;
    c.final_logit_softcap = 2.0f;
  }
  if (type == "smollm3") c.rope_layers = {1, 0};
  if (type == "mistral" || type == "phi3") {
    c.sliding_window = 3;
    c.sliding_layers = {1, 1};
  }
  if (type == "phi3") {
    // Fused projections, RoPE on 6 of 8 features, LongRoPE with every test sequence past its
    // original length of 4 (the long factors; the cached path's first chunk is already past it).
    c.fused_projections = true;
    c.rotary_dim = 6;
    RopeScaling s;
    s.longrope = true;
    s.short_factor = {1.0f, 1.1f, 1.3f};
    s.long_factor = {1.5f, 3.0f, 7.0f};
    s.original_max_position_embeddings = 4;
    s.attention_factor = 1.2f;
    c.rope_scaling = s;
  }
  return c;
}

// An adapter on all seven projections with a non-zero B, so every path carries gradient.
LoraAdapter full_adapter(const Model& model, float dropout = 0.0f, uint64_t seed = 5) {
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.dropout = dropout;
  lc.keys = {Proj::q, Proj::k, Proj::v, Proj::o, Proj::gate, Proj::up, Proj::down};
  LoraAdapter a = LoraAdapter::create(model, lc, seed);
  uint64_t state = seed;
  for (LoraModule& m : a.modules)
    for (float& b : m.B.value.data) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      b = float(int64_t(state >> 40) % 2001 - 1000) * 1e-4f;
    }
  return a;
}

struct Batch {
  int64_t batch = 2, seq = 7;
  std::vector<int32_t> ids, targets;
  std::vector<float> weights;
  std::vector<uint8_t> key_valid;
  explicit Batch(int64_t vocab, int64_t seq_ = 7) : seq(seq_) {
    for (int64_t i = 0; i < batch * seq; ++i) {
      ids.push_back(int32_t((i * 7 + 3) % vocab));
      targets.push_back(int32_t((i * 11 + 5) % vocab));
      const bool pad = i >= batch * seq - 2;  // the second sequence ends in two padding tokens
      key_valid.push_back(pad ? 0 : 1);
      weights.push_back(pad || i % seq == 0 ? 0.0f : 1.0f);
    }
  }
  float normalizer() const {
    float n = 0;
    for (float w : weights) n += w;
    return n;
  }
};

struct StepResult {
  float loss = 0;
  std::vector<std::vector<float>> grads;
};

StepResult loss_and_grads(const Model& model, LoraAdapter& adapter, const Batch& b, bool checkpoint,
                          uint64_t dropout_seed = 0, bool release_values = false) {
  for (ag::Parameter* p : adapter.parameters()) p->zero_grad();
  AdapterStack stack{{&adapter}, true, dropout_seed};
  ag::Tape tape;
  tape.set_release_values(release_values);
  ag::Var h = forward_hidden(tape, model, stack, b.ids, b.batch, b.seq, b.key_valid,
                             ForwardOptions{checkpoint});
  ag::Var loss = ag::cross_entropy_head(tape, h, model.head(), b.targets, b.weights, b.normalizer(),
                                        model.config.final_logit_softcap);
  tape.backward(loss);
  StepResult r{loss->value.data[0], {}};
  for (ag::Parameter* p : adapter.parameters()) r.grads.push_back(p->grad.data);
  return r;
}

class TransformerArch : public ::testing::TestWithParam<std::string> {};

TEST_P(TransformerArch, CheckpointingGivesIdenticalLossAndGradients) {
  const Model model = make_random_model(tiny_config(GetParam()), 1);
  LoraAdapter adapter = full_adapter(model, /*dropout=*/0.1f);
  const Batch b(model.config.vocab_size);
  const StepResult plain = loss_and_grads(model, adapter, b, false, 42);
  const StepResult ckpt = loss_and_grads(model, adapter, b, true, 42);
  EXPECT_TRUE(std::isfinite(plain.loss));
  EXPECT_EQ(plain.loss, ckpt.loss);
  ASSERT_EQ(plain.grads.size(), ckpt.grads.size());
  for (std::size_t i = 0; i < plain.grads.size(); ++i) EXPECT_EQ(plain.grads[i], ckpt.grads[i]);
}

// The trainer's tape frees values in backward (and a checkpoint's replay always does): the loss
// and every gradient stay bit-identical, with dropout (unfolded LoRA) and without it over enough
// tokens that the branches fold into the frozen products.
TEST_P(TransformerArch, ReleasingValuesGivesIdenticalLossAndGradients) {
  const Model model = make_random_model(tiny_config(GetParam()), 8);
  for (const float dropout : {0.1f, 0.0f}) {
    LoraAdapter adapter = full_adapter(model, dropout);
    const Batch b(model.config.vocab_size, dropout > 0 ? 7 : 150);
    const StepResult kept = loss_and_grads(model, adapter, b, false, 42, false);
    for (const bool checkpoint : {false, true}) {
      SCOPED_TRACE(testing::Message() << "dropout " << dropout << ", checkpoint " << checkpoint);
      const StepResult freed = loss_and_grads(model, adapter, b, checkpoint, 42, true);
      EXPECT_TRUE(std::isfinite(kept.loss));
      EXPECT_EQ(kept.loss, freed.loss);
      EXPECT_EQ(kept.grads, freed.grads);
    }
  }
}

TEST_P(TransformerArch, SameSeedSameBits) {
  const Model model = make_random_model(tiny_config(GetParam()), 2);
  LoraAdapter a1 = full_adapter(model, 0.2f, 9), a2 = full_adapter(model, 0.2f, 9);
  const Batch b(model.config.vocab_size);
  const StepResult r1 = loss_and_grads(model, a1, b, false, 3);
  const StepResult r2 = loss_and_grads(model, a2, b, false, 3);
  EXPECT_EQ(r1.loss, r2.loss);
  EXPECT_EQ(r1.grads, r2.grads);
  // A different dropout seed gives a different step.
  const StepResult r3 = loss_and_grads(model, a2, b, false, 4);
  EXPECT_NE(r1.loss, r3.loss);
}

TEST_P(TransformerArch, LoraGradientsMatchFiniteDifferences) {
  const Model model = make_random_model(tiny_config(GetParam()), 3);
  LoraAdapter adapter = full_adapter(model);
  const Batch b(model.config.vocab_size);
  const StepResult r = loss_and_grads(model, adapter, b, false);
  // Central differences on the largest gradient entry of every A and B (f32 forward, so a
  // moderate step and tolerance).
  const auto params = adapter.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) {
    std::size_t at = 0;
    for (std::size_t j = 0; j < r.grads[i].size(); ++j)
      if (std::abs(r.grads[i][j]) > std::abs(r.grads[i][at])) at = j;
    float& w = params[i]->value.data[at];
    const float keep = w, h = 1e-2f;
    w = keep + h;
    const double up = loss_and_grads(model, adapter, b, false).loss;
    w = keep - h;
    const double down = loss_and_grads(model, adapter, b, false).loss;
    w = keep;
    const double numeric = (up - down) / (2 * h);
    EXPECT_NEAR(r.grads[i][at], numeric, 2e-3 + 2e-2 * std::abs(numeric)) << "parameter " << i;
  }
}

TEST_P(TransformerArch, CachedForwardMatchesFullForward) {
  const Model model = make_random_model(tiny_config(GetParam()), 4);
  LoraAdapter adapter = full_adapter(model);
  const AdapterStack stack{{&adapter}, false, 0};
  const std::vector<int32_t> ids = {1, 5, 9, 3, 7, 2, 8, 6};
  const Tensor full = forward_logits(model, stack, ids, 1, int64_t(ids.size()));
  KVCache cache = KVCache::create(model.config, 16);
  Tensor first = forward_cached(model, stack, cache, std::span(ids).first(5));
  std::vector<float> cached = first.data;
  for (std::size_t t = 5; t < ids.size(); ++t) {
    const Tensor step = forward_cached(model, stack, cache, std::span(ids).subspan(t, 1));
    cached.insert(cached.end(), step.data.begin(), step.data.end());
  }
  EXPECT_EQ(cache.length, int64_t(ids.size()));
  ASSERT_EQ(cached.size(), full.data.size());
  for (std::size_t i = 0; i < cached.size(); ++i) EXPECT_NEAR(cached[i], full.data[i], 1e-5);
  // The cache refuses to overflow.
  const std::vector<int32_t> more(9, 1);
  EXPECT_THROW(forward_cached(model, stack, cache, more), std::length_error);
}

// A cache of IEEE halves: every step's logits within half precision of the full forward's, the
// first layer's cached keys exactly the f32 cache's rounded to halves (its inputs do not depend on
// the cache), with heads of 8 (widened for the f32 kernels where the vectors are longer) and of 16
// (read by the decode kernels as halves on every vector instruction set).
TEST_P(TransformerArch, HalfCacheIsTheF32CacheRounded) {
  for (const int64_t head_dim : {8, 16}) {
    SCOPED_TRACE("head_dim " + std::to_string(head_dim));
    ModelConfig c = tiny_config(GetParam());
    c.head_dim = head_dim;
    const Model model = make_random_model(c, 4);
    LoraAdapter adapter = full_adapter(model);
    const AdapterStack stack{{&adapter}, false, 0};
    const std::vector<int32_t> ids = {1, 5, 9, 3, 7, 2, 8, 6};
    const Tensor full = forward_logits(model, stack, ids, 1, int64_t(ids.size()));
    KVCache exact = KVCache::create(model.config, 16);
    KVCache half = KVCache::create(model.config, 16, KVCacheType::F16);
    std::vector<float> cached = forward_cached(model, stack, half, std::span(ids).first(5)).data;
    forward_cached(model, stack, exact, std::span(ids).first(5));
    for (std::size_t t = 5; t < ids.size(); ++t) {
      const Tensor step = forward_cached(model, stack, half, std::span(ids).subspan(t, 1));
      forward_cached(model, stack, exact, std::span(ids).subspan(t, 1));
      cached.insert(cached.end(), step.data.begin(), step.data.end());
    }
    ASSERT_TRUE(half.k.empty());
    ASSERT_EQ(half.layers(), c.num_layers);
    const int64_t width = c.num_kv_heads * head_dim;
    for (int64_t i = 0; i < int64_t(ids.size()) * width; ++i) {
      EXPECT_EQ(half.half_k[0][i], f32_to_f16(exact.k[0].data[i])) << i;
      EXPECT_EQ(half.half_v[0][i], f32_to_f16(exact.v[0].data[i])) << i;
    }
    ASSERT_EQ(cached.size(), full.data.size());
    float range = 0;
    for (float x : full.data) range = std::max(range, std::abs(x));
    double worst = 0;
    for (std::size_t i = 0; i < cached.size(); ++i)
      worst = std::max(worst, double(std::abs(cached[i] - full.data[i])));
    EXPECT_LT(worst, 1e-3 * range);
  }
}

// Decode steps with int8 activations on a 4-bit base: the logits move (the products took the
// int8 kernels: a prompt of five tokens and single tokens both do), by less than 5% of their range;
// a batched step of one row gives what the step alone gives (its LoRA branches added apart).
TEST_P(TransformerArch, Int8DecodeActivationsStayNearF32) {
  ModelConfig c = tiny_config(GetParam());
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.head_dim = 16;
  const Model model = make_random_model(c, 4, /*quantize_bits=*/4, /*group_size=*/32);
  LoraAdapter adapter = full_adapter(model);
  const AdapterStack stack{{&adapter}, false, 0};
  const std::vector<int32_t> ids = {1, 5, 9, 3, 7, 2, 8, 6};
  KVCache exact = KVCache::create(model.config, 16), rounded = exact, batched = exact;
  const auto int8 = GemvActivations::Int8;
  std::vector<float> f32_logits, int8_logits;
  for (std::size_t t = 0; t < ids.size(); t += t == 0 ? 5 : 1) {
    const auto step = std::span(ids).subspan(t, t == 0 ? 5 : 1);
    const Tensor a = forward_cached(model, stack, exact, step);
    const Tensor b = forward_cached(model, stack, rounded, step, CachedLogits::All, int8);
    f32_logits.insert(f32_logits.end(), a.data.begin(), a.data.end());
    int8_logits.insert(int8_logits.end(), b.data.begin(), b.data.end());
    if (t == 0) {
      forward_cached(model, stack, batched, step, CachedLogits::All, int8);
      continue;
    }
    const DecodeRow row{&stack, &batched, ids[t]};
    const Tensor one = forward_cached_batch(model, {&row, 1}, int8);
    ASSERT_EQ(one.data.size(), b.data.size());
    for (std::size_t i = 0; i < b.data.size(); ++i)
      ASSERT_NEAR(one.data[i], b.data[i], 1e-4f) << "step " << t << ", logit " << i;
  }
  float range = 0;
  for (float x : f32_logits) range = std::max(range, std::abs(x));
  double worst = 0;
  for (std::size_t i = 0; i < f32_logits.size(); ++i)
    worst = std::max(worst, double(std::abs(int8_logits[i] - f32_logits[i])));
  EXPECT_GT(worst, 0.0);
  EXPECT_LT(worst, 5e-2 * range);
}

INSTANTIATE_TEST_SUITE_P(Archs, TransformerArch,
                         ::testing::Values("llama", "qwen2", "qwen3", "gemma3_text", "gemma2",
                                           "smollm3", "mistral", "phi3"));

// A prompt's cached pass holds one layer's activations at a time: 12 layers of 1024 tokens make
// about 16 MiB of activations each (hidden 256, MLP 1024), 190 MiB if every layer's stayed until
// the logits. The peak of what the program holds through operator new (support/heap_counter.h,
// the same under the sanitizers) grows by less than four layers' worth.
TEST(Transformer, CachedPromptHoldsOneLayerOfActivations) {
  ModelConfig c = tiny_config("llama");
  c.hidden_size = 256;
  c.intermediate_size = 1024;
  c.num_layers = 12;
  c.head_dim = 64;
  c.vocab_size = 64;
  const Model model = make_random_model(c, 9);
  const std::vector<int32_t> ids(1024, 3);
  KVCache cache = KVCache::create(c, int64_t(ids.size()));
  const int64_t before = test::heap_counter::live_bytes();
  test::heap_counter::reset_peak();
  const Tensor logits = forward_cached(model, {}, cache, ids, CachedLogits::Last);
  const double grew_mib = double(test::heap_counter::peak_bytes() - before) / (1 << 20);
  ASSERT_EQ(logits.shape, (std::vector<int64_t>{1, c.vocab_size}));
  EXPECT_LT(grew_mib, 64.0);
}

TEST(Transformer, DisabledAdapterIsTheBase) {
  const Model model = make_random_model(tiny_config("qwen3"), 5);
  LoraAdapter adapter = full_adapter(model);
  const std::vector<int32_t> ids = {3, 1, 4, 1, 5};
  const Tensor base = forward_logits(model, AdapterStack{}, ids, 1, 5);
  const Tensor with = forward_logits(model, AdapterStack{{&adapter}, false, 0}, ids, 1, 5);
  EXPECT_NE(base.data, with.data);
  adapter.enabled = false;
  EXPECT_EQ(forward_logits(model, AdapterStack{{&adapter}, false, 0}, ids, 1, 5).data, base.data);
  adapter.enabled = true;
  adapter.strength = 0.0f;
  EXPECT_EQ(forward_logits(model, AdapterStack{{&adapter}, false, 0}, ids, 1, 5).data, base.data);
}

TEST(Transformer, PaddedRowsDoNotChangeValidRows) {
  // Sequence 0 alone, and sequence 0 in a batch whose second sequence is padding-masked.
  const Model model = make_random_model(tiny_config("llama"), 6);
  const std::vector<int32_t> one = {4, 8, 15, 16};
  std::vector<int32_t> two = one;
  two.insert(two.end(), {23, 42 % 40, 0, 0});
  const std::vector<uint8_t> valid = {1, 1, 1, 1, 1, 1, 0, 0};
  ag::Tape t1(false), t2(false);
  const Tensor a = forward_hidden(t1, model, {}, one, 1, 4)->value;
  const Tensor b = forward_hidden(t2, model, {}, two, 2, 4, valid)->value;
  for (std::size_t i = 0; i < a.data.size(); ++i) EXPECT_EQ(a.data[i], b.data[i]);
}

TEST(Transformer, BadInputIsAClearError) {
  const Model model = make_random_model(tiny_config("llama"), 7);
  ag::Tape tape(false);
  const std::vector<int32_t> ids = {1, 2, 3};
  EXPECT_THROW(forward_hidden(tape, model, {}, ids, 2, 2), std::invalid_argument);
  const std::vector<int32_t> out_of_vocab = {1, 99};
  EXPECT_THROW(forward_hidden(tape, model, {}, out_of_vocab, 1, 2), std::out_of_range);
}

}  // namespace
}  // namespace lora
