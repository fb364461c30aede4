// Evaluation keeps no tape and no full logits: the loss is the training path's, and the memory a
// no-gradient pass takes does not grow with the number of blocks or with tokens x vocabulary.
#include <gtest/gtest.h>
#include <malloc.h>

#include <cmath>
#include <vector>

#include "autograd/heap.h"
#include "data/batch.h"
#include "trainer/batch_loss.h"
#include "trainer/evaluate.h"
#include "trainer/lora.h"
#include "trainer/random_model.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

ModelConfig eval_config(int64_t layers, int64_t vocab) {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 64;
  c.intermediate_size = 256;
  c.num_layers = layers;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = vocab;
  c.rms_norm_eps = 1e-6f;
  c.tie_word_embeddings = true;
  return c;
}

// `count` examples of `length` random tokens, every target trained.
std::vector<data::Example> random_examples(int64_t count, int64_t length, int64_t vocab) {
  std::vector<data::Example> out(static_cast<std::size_t>(count));
  uint64_t state = 7;
  for (data::Example& e : out) {
    for (int64_t i = 0; i < length; ++i) {
      state = data::mix64(state);
      e.ids.push_back(int32_t(state % uint64_t(vocab)));
    }
    e.trained.assign(e.ids.size(), 1);
  }
  return out;
}

// An adapter on all seven projections with a non-zero B, so it changes the loss.
LoraAdapter all_projections(const Model& model) {
  LoraConfig lc;
  lc.rank = 4;
  lc.keys = {Proj::q, Proj::k, Proj::v, Proj::o, Proj::gate, Proj::up, Proj::down};
  LoraAdapter adapter = LoraAdapter::create(model, lc, 3);
  for (LoraModule& m : adapter.modules)
    for (std::size_t i = 0; i < m.B.value.data.size(); ++i)
      m.B.value.data[i] = 0.01f * float(i % 7);
  return adapter;
}

// The summed loss of one batch the way training records it (every node on a recording tape).
double recorded_sum(const Model& model, const AdapterStack& stack, const data::Batch& b) {
  ag::Tape tape(/*record=*/true);
  return batch_loss(tape, model, stack, b, float(b.trained_tokens)).summed();
}

TEST(EvalMemory, EvaluationGivesTheRecordedLoss) {
  const Model model = make_random_model(eval_config(3, 300), 11, /*quantize_bits=*/4, 32);
  LoraAdapter adapter = all_projections(model);
  const AdapterStack stack{{&adapter}};
  const auto examples = random_examples(5, 40, 300);
  const data::BatchPlan plan(examples, 2, 0, /*shuffle=*/false);
  double sum = 0.0;
  int64_t tokens = 0;
  for (int64_t g = 0; g < plan.batches_per_epoch(); ++g) {
    const data::Batch b = plan.group(g);
    sum += recorded_sum(model, stack, b);
    tokens += b.trained_tokens;
  }
  const EvalResult r = evaluate(model, stack, plan, -1);
  EXPECT_EQ(r.tokens, tokens);
  EXPECT_EQ(r.batches, plan.batches_per_epoch());
  EXPECT_NEAR(r.loss, sum / double(tokens), 1e-6 * std::abs(r.loss));
  EXPECT_GT(r.loss, 1.0);  // a random model over 300 tokens is far from certain
}

// The loss against the full logits in double precision, an independent check of the tiled head.
TEST(EvalMemory, EvaluationMatchesFullLogits) {
  const Model model = make_random_model(eval_config(2, 200), 12);
  const AdapterStack stack{};
  const auto examples = random_examples(1, 30, 200);
  const data::BatchPlan plan(examples, 1, 0, /*shuffle=*/false);
  const data::Batch b = plan.group(0);
  const Tensor logits = forward_logits(model, stack, b.inputs, b.batch, b.seq);
  double sum = 0.0;
  for (int64_t i = 0; i < b.batch * b.seq; ++i) {
    if (b.weights[i] == 0.0f) continue;
    const float* l = logits.ptr() + i * 200;
    double max = l[0], z = 0.0;
    for (int64_t v = 0; v < 200; ++v) max = std::max(max, double(l[v]));
    for (int64_t v = 0; v < 200; ++v) z += std::exp(double(l[v]) - max);
    sum += max + std::log(z) - double(l[b.targets[i]]);
  }
  const EvalResult r = evaluate(model, stack, plan, -1);
  EXPECT_NEAR(r.loss, sum / double(b.trained_tokens), 1e-5);
}

// A non-recording forward leaves the same few nodes on the caller's tape however deep the model.
TEST(EvalMemory, NonRecordingTapeHoldsNoBlockActivations) {
  auto nodes_after_forward = [](int64_t layers) {
    const Model model = make_random_model(eval_config(layers, 64), 13);
    const AdapterStack stack{};
    const auto examples = random_examples(2, 16, 64);
    const data::Batch b = data::BatchPlan(examples, 2, 0, false).group(0);
    ag::Tape tape(/*record=*/false);
    batch_loss(tape, model, stack, b, float(b.trained_tokens));
    return tape.size();
  };
  const std::size_t shallow = nodes_after_forward(1), deep = nodes_after_forward(6);
  EXPECT_EQ(shallow, deep);
  EXPECT_LE(deep, 4u);  // the final norm's input and output, the loss
}

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitizedHeap = true;
#else
constexpr bool kSanitizedHeap = false;
#endif

// With freed memory kept in the process (as `lora` runs), the main heap's size only grows: its
// growth over an evaluation bounds what the evaluation held at once. Keeping every block's
// activations (16 blocks, ~4.5 MiB each here) or the [tokens, vocab] logits (128 MiB) passes the
// bound; one block plus the loss head's 16 MiB logits tile stays under it.
TEST(EvalMemory, EvaluationPeakHeapIsOneBlockAndOneLogitsTile) {
  if (kSanitizedHeap) GTEST_SKIP() << "the sanitizer's allocator has no glibc heap to measure";
  keep_freed_memory_for_reuse();
  constexpr int64_t kVocab = 32768, kTokens = 1024;
  const Model model = make_random_model(eval_config(16, kVocab), 14);
  const AdapterStack stack{};
  const auto examples = random_examples(2, kTokens / 2 + 1, kVocab);
  const data::BatchPlan plan(examples, 2, 0, /*shuffle=*/false);
  const data::Batch b = plan.group(0);
  ASSERT_EQ(b.batch * b.seq, kTokens);
  const std::size_t before = mallinfo2().arena;
  const EvalResult r = evaluate(model, stack, plan, -1);
  const double grown_mib = double(mallinfo2().arena - before) / (1 << 20);
  EXPECT_EQ(r.tokens, kTokens);
  const double full_logits_mib = double(kTokens * kVocab * 4) / (1 << 20);
  EXPECT_LT(grown_mib, 48.0) << "full logits would be " << full_logits_mib << " MiB";
}

}  // namespace
}  // namespace lora
