// The runtime path: an adapter applied unmerged in f32 on top of the (quantized) base gives the
// logits of the float-merged model; switched off (or at strength 0) it gives the base bit for
// bit, and the toggle works between forward passes without reloading.
#include <gtest/gtest.h>

#include "tests/adapter_test_util.h"
#include "trainer/io/adapter_io.h"
#include "trainer/merge.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using test::kPromptIds;
using test::max_abs_diff;
using test::same_bits;
using test::TempDir;

const std::vector<Proj>& kAll = test::kAllProj;

Tensor logits(const Model& model, std::vector<LoraAdapter*> adapters) {
  return test::prompt_logits(model, std::move(adapters), 2);
}

TEST(RuntimeAdapter, MatchesFloatMergedModel) {
  LORA_REQUIRE_SHARED(test::kStories);
  TempDir tmp("runtime");
  const Model model = load_model(test::stories_dir());
  LoraAdapter adapter = test::adapter_with_random_b(model, kAll, 4, 8.0f, 0.1f, 11);
  save_adapter(tmp / "adapter", adapter, model, AdapterFormat::mlx);

  const Tensor base = logits(model, {});
  const Tensor adapted = logits(model, {&adapter});
  EXPECT_GT(max_abs_diff(base, adapted), 0.05f) << "the adapter should change the logits";

  const std::vector<MergeAdapter> merge{{AdapterFile::read(tmp / "adapter"), 1.0}};
  const MergeReport report = merge_adapters(test::stories_dir(), merge, tmp / "merged");
  EXPECT_EQ(report.merged.size(), adapter.modules.size());
  EXPECT_NEAR(report.total.kept(), 1.0, 1e-6);  // f32 base: nothing is lost
  const Model merged = load_model(tmp / "merged");
  const float diff = max_abs_diff(logits(merged, {}), adapted);
  EXPECT_LT(diff, 1e-4f);
  RecordProperty("runtime_vs_merged_max_abs_diff", std::to_string(diff));

  // The same adapter through the PEFT layout and back applies identically.
  AdapterFile::read(tmp / "adapter").write(tmp / "peft", AdapterFormat::peft);
  LoraAdapter from_peft = load_adapter(tmp / "peft", model);
  EXPECT_TRUE(same_bits(logits(model, {&from_peft}), adapted));
}

TEST(RuntimeAdapter, ToggleAndStrengthZeroAreBitExact) {
  LORA_REQUIRE_SHARED(test::kStories);
  // A 4-bit base: the runtime path adds the f32 adapter on top of the quantized weights.
  LoadOptions q4;
  q4.quantize_bits = 4;
  q4.quantize_group_size = 32;
  const Model model = load_model(test::stories_dir(), q4);
  LoraAdapter adapter =
      test::adapter_with_random_b(model, {Proj::q, Proj::v, Proj::down}, 8, 16.0f, 0.1f, 5);
  const Tensor base = logits(model, {});
  const Tensor adapted = logits(model, {&adapter});
  ASSERT_GT(max_abs_diff(base, adapted), 0.05f);

  // Off / on / off between forward passes of one process, nothing reloaded.
  adapter.enabled = false;
  EXPECT_TRUE(same_bits(logits(model, {&adapter}), base));
  adapter.enabled = true;
  EXPECT_TRUE(same_bits(logits(model, {&adapter}), adapted));
  adapter.enabled = false;
  EXPECT_TRUE(same_bits(logits(model, {&adapter}), base));
  adapter.enabled = true;

  adapter.strength = 0.0f;
  EXPECT_TRUE(same_bits(logits(model, {&adapter}), base));
  adapter.strength = 1.0f;
  EXPECT_TRUE(same_bits(logits(model, {&adapter}), adapted));
}

TEST(RuntimeAdapter, StackedAdaptersMatchMergingBoth) {
  LORA_REQUIRE_SHARED(test::kStories);
  TempDir tmp("runtime");
  const Model model = load_model(test::stories_dir());
  LoraAdapter first = test::adapter_with_random_b(model, {Proj::q, Proj::v}, 4, 8.0f, 0.1f, 21);
  LoraAdapter second =
      test::adapter_with_random_b(model, {Proj::v, Proj::up}, 2, 2.0f, 0.1f, 22, 2);
  second.strength = 0.5f;
  save_adapter(tmp / "first", first, model, AdapterFormat::mlx);
  save_adapter(tmp / "second", second, model, AdapterFormat::peft);
  const std::vector<MergeAdapter> both{{AdapterFile::read(tmp / "first"), 1.0},
                                       {AdapterFile::read(tmp / "second"), 0.5}};
  merge_adapters(test::stories_dir(), both, tmp / "merged");
  const Model merged = load_model(tmp / "merged");
  EXPECT_LT(max_abs_diff(logits(merged, {}), logits(model, {&first, &second})), 1e-4f);
}

TEST(RuntimeAdapter, CachedGenerationPathAppliesTheAdapter) {
  LORA_REQUIRE_SHARED(test::kStories);
  const Model model = load_model(test::stories_dir());
  LoraAdapter adapter = test::adapter_with_random_b(model, kAll, 4, 8.0f, 0.1f, 3);
  AdapterStack stack;
  stack.adapters = {&adapter};
  const std::vector<int32_t> ids(kPromptIds.begin(), kPromptIds.begin() + 6);
  const Tensor full = forward_logits(model, stack, ids, 1, 6);
  KVCache cache = KVCache::create(model.config, 16);
  const Tensor prefix = forward_cached(model, stack, cache, std::span(ids).first(4));
  const Tensor rest = forward_cached(model, stack, cache, std::span(ids).subspan(4));
  const int64_t vocab = model.config.vocab_size;
  for (int64_t i = 0; i < vocab; ++i) {
    EXPECT_NEAR(prefix.data[3 * vocab + i], full.data[3 * vocab + i], 1e-4);
    EXPECT_NEAR(rest.data[1 * vocab + i], full.data[5 * vocab + i], 1e-4);
  }
}

TEST(RuntimeAdapter, LoadRejectsAnotherModelsAdapter) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED("adapters/peft-qwen2.5-0.5b-instruct-r8-qv");
  const Model model = load_model(test::stories_dir());
  try {
    load_adapter(test::shared_dir() / "adapters/peft-qwen2.5-0.5b-instruct-r8-qv", model);
    FAIL() << "a Qwen adapter must not load onto stories260K";
  } catch (const std::runtime_error& e) {
    const std::string msg = e.what();
    // Layer 0 fits (stories has 5 layers); its shapes do not.
    EXPECT_NE(msg.find("layers.0.self_attn.q_proj.lora_A.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[896, 896]"), std::string::npos) << msg;
    EXPECT_NE(msg.find("[64, 64]"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace lora
