// Batched decode: sequences over one base with different prompts, lengths, adapters and strengths,
// stepped together (one forward per step for all of them), give the ids each gives alone; a
// prompt's last-token logits equal the last row of its full logits.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/batched_decode.h"
#include "trainer/generate.h"
#include "trainer/random_model.h"
#include "trainer/trained_block.h"

namespace lora {
namespace {

ModelConfig small_config() {
  ModelConfig c;
  c.model_type = "qwen2";
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 96;
  c.rms_norm_eps = 1e-6f;
  c.tie_word_embeddings = false;  // a tied random model repeats its last token
  c.attention_bias = true;
  return c;
}

// An adapter on every projection with a B large enough to change the greedy ids.
LoraAdapter adapter(const Model& model, uint64_t seed, bool dora = false) {
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.dora = dora;
  lc.keys = {Proj::q, Proj::k, Proj::v, Proj::o, Proj::gate, Proj::up, Proj::down};
  LoraAdapter a = LoraAdapter::create(model, lc, seed);
  for (LoraModule& m : a.modules)
    for (std::size_t i = 0; i < m.B.value.data.size(); ++i)
      m.B.value.data[i] = 0.3f * std::sin(float(i * (seed + 3)));
  return a;
}

// Full fine-tuning's copies of every block, moved off the base's values.
LoraAdapter fully_fine_tuned(const Model& model) {
  LoraConfig lc;
  lc.full = true;
  LoraAdapter a = LoraAdapter::create(model, lc, 0);
  for (TrainedBlock& block : a.blocks)
    for (float& v : block.at(block_linear(Proj::down)).value.data) v *= -1.5f;
  return a;
}

struct Request {
  std::vector<int32_t> prompt;
  AdapterStack stack;
  int64_t max_tokens;
  int64_t joins_at_step;  // arrives while the others are already decoding
};

class BatchedDecode : public ::testing::TestWithParam<int> {};

TEST_P(BatchedDecode, GreedyIdsEqualEachSequenceAlone) {
  const Model model = make_random_model(small_config(), 5, /*quantize_bits=*/GetParam());
  LoraAdapter a = adapter(model, 1), b = adapter(model, 2), d = adapter(model, 3, /*dora=*/true);
  LoraAdapter full = GetParam() == 0 ? fully_fine_tuned(model) : LoraAdapter{};
  std::vector<Request> requests{
      {{1, 2, 3}, {}, 24, 0},  // the base alone
      {{7, 8, 9, 10, 11, 12, 13}, {{&a}, false, 0, {1.0f}}, 30, 0},
      {{7, 8, 9, 10, 11, 12, 13}, {{&a}, false, 0, {0.4f}}, 18, 0},  // same adapter, other scale
      {{40, 41}, {{&a, &b}, false, 0, {0.5f, -0.8f}}, 26, 3},        // two stacked, joins late
      {{5, 60, 61, 62, 63}, {{&d}, false, 0, {1.0f}}, 20, 5},        // DoRA: its own product
  };
  // Full fine-tuning replaces the blocks (a float base only): such a sequence steps alone.
  if (GetParam() == 0) requests.push_back({{33, 34, 35}, {{&full}, false, 0, {1.0f}}, 22, 6});
  // The caches in f32, then in halves: batched steps read either kind.
  for (const KVCacheType kv : {KVCacheType::F32, KVCacheType::F16}) {
    SCOPED_TRACE(kv == KVCacheType::F16 ? "f16 cache" : "f32 cache");
    GenerateOptions options;
    options.kv_cache = kv;
    options.stop_ids = {0};                      // random logits: ends some sequences early
    options.sampling.repetition_penalty = 1.3f;  // each sequence's own history steers it
    std::vector<std::vector<int32_t>> alone;
    for (const Request& r : requests) {
      options.max_tokens = r.max_tokens;
      alone.push_back(generate(model, r.stack, r.prompt, options).tokens);
    }
    // The adapters change the ids, so equality below is about each row keeping its own.
    ASSERT_NE(alone[1], alone[2]);
    ASSERT_NE(alone[0], std::vector<int32_t>(alone[1].begin(), alone[1].begin() + alone[0].size()));

    for (const int64_t max_batch : {5, 2}) {
      std::vector<std::unique_ptr<Decoding>> sequences;
      std::vector<std::vector<int32_t>> together(requests.size());
      for (int64_t step = 0; step < 64; ++step) {
        for (const Request& r : requests)
          if (r.joins_at_step == step) {
            options.max_tokens = r.max_tokens;
            sequences.push_back(std::make_unique<Decoding>(model, r.stack, r.prompt, options));
          }
        std::vector<Decoding*> running;
        std::vector<std::size_t> which;
        for (std::size_t i = 0; i < sequences.size(); ++i)
          if (!sequences[i]->finished()) {
            running.push_back(sequences[i].get());
            which.push_back(i);
          }
        if (running.empty() && sequences.size() == requests.size()) break;
        const std::vector<StepOutcome> outcomes = step_together(running, max_batch);
        for (std::size_t k = 0; k < outcomes.size(); ++k) {
          ASSERT_EQ(outcomes[k].error, "");
          if (outcomes[k].id) together[which[k]].push_back(*outcomes[k].id);
        }
      }
      for (std::size_t i = 0; i < requests.size(); ++i)
        EXPECT_EQ(together[i], alone[i]) << "sequence " << i << ", batches of " << max_batch;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(FloatAndFourBit, BatchedDecode, ::testing::Values(0, 4));

TEST(BatchedDecodeForward, RowLogitsMatchTheOneSequencePass) {
  const Model model = make_random_model(small_config(), 9);
  LoraAdapter a = adapter(model, 4);
  const AdapterStack base, adapted{{&a}, false, 0, {0.7f}};
  const std::vector<std::vector<int32_t>> prompts{{3, 4, 5, 6}, {9}, {20, 21, 22}};
  const std::vector<const AdapterStack*> stacks{&adapted, &base, &adapted};
  const std::vector<int32_t> next{11, 12, 13};
  std::vector<KVCache> alone, batched;
  std::vector<Tensor> want;
  std::vector<DecodeRow> rows;
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    alone.push_back(KVCache::create(model.config, 8));
    batched.push_back(KVCache::create(model.config, 8));
  }
  for (std::size_t i = 0; i < prompts.size(); ++i) {
    forward_cached(model, *stacks[i], alone[i], prompts[i]);
    forward_cached(model, *stacks[i], batched[i], prompts[i]);
    want.push_back(forward_cached(model, *stacks[i], alone[i], {&next[i], 1}));
    rows.push_back({stacks[i], &batched[i], next[i]});
  }
  const Tensor got = forward_cached_batch(model, rows);
  const int64_t vocab = model.config.vocab_size;
  ASSERT_EQ(got.shape, (std::vector<int64_t>{3, vocab}));
  for (std::size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(batched[i].length, alone[i].length);
    for (int64_t v = 0; v < vocab; ++v)
      ASSERT_NEAR(got.data[i * vocab + v], want[i].data[v], 1e-4f) << "row " << i << " id " << v;
  }
  // A full cache is refused before anything is written.
  KVCache full = KVCache::create(model.config, 1);
  full.length = 1;
  const std::vector<DecodeRow> over{{&base, &full, 1}};
  EXPECT_THROW(forward_cached_batch(model, over), std::length_error);
}

// A prompt run for its last token's logits alone (what generation samples from) gives that row
// of the full logits (within float rounding: one row's head is a matrix-vector product, eleven
// rows' an sgemm), and leaves the same cache behind (the next step is bit for bit the same).
TEST(CachedForward, LastLogitsAreTheLastRowOfAll) {
  const Model model = make_random_model(small_config(), 11, /*quantize_bits=*/4);
  const std::vector<int32_t> prompt = {3, 17, 42, 8, 61, 29, 5, 77, 12, 40, 33};
  KVCache all = KVCache::create(model.config, 16), last = KVCache::create(model.config, 16);
  const AdapterStack none;
  const Tensor full = forward_cached(model, none, all, prompt);
  const Tensor one = forward_cached(model, none, last, prompt, CachedLogits::Last);
  const int64_t vocab = model.config.vocab_size, n = static_cast<int64_t>(prompt.size());
  ASSERT_EQ(one.dim(0), 1);
  for (int64_t v = 0; v < vocab; ++v)
    EXPECT_NEAR(one.ptr()[v], full.ptr()[(n - 1) * vocab + v], 1e-5) << v;
  const int32_t next = 9;
  const Tensor after_all = forward_cached(model, none, all, {&next, 1});
  const Tensor after_last = forward_cached(model, none, last, {&next, 1}, CachedLogits::Last);
  for (int64_t v = 0; v < vocab; ++v) EXPECT_EQ(after_last.ptr()[v], after_all.ptr()[v]) << v;
}

}  // namespace
}  // namespace lora
