// Merging adapters into a base folder: strength 0 copies the base bit for bit; on a 4-bit base the
// report says how much of each delta survives, and merging into the original float weights keeps
// more of it than dequantize-add-requantize; conversion, shards, and clean failures.
#include <gtest/gtest.h>

#include <cstring>

#include "tests/adapter_test_util.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/safetensors.h"
#include "trainer/merge.h"
#include "trainer/model_convert.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::kPromptIds;
using test::max_abs_diff;
using test::same_bits;
using test::TempDir;

const std::vector<Proj>& kAll = test::kAllProj;

Tensor logits(const Model& model, std::vector<LoraAdapter*> adapters = {}) {
  return test::prompt_logits(model, std::move(adapters), 1);
}

// Every tensor of the two model folders has the same dtype, shape and bytes.
void expect_same_weights(const fs::path& a_dir, const fs::path& b_dir) {
  const auto a = WeightSet::open_dir(a_dir);
  const auto b = WeightSet::open_dir(b_dir);
  ASSERT_EQ(a.names(), b.names());
  for (const auto& name : a.names()) {
    EXPECT_EQ(a.info(name).dtype, b.info(name).dtype) << name;
    EXPECT_EQ(a.info(name).shape, b.info(name).shape) << name;
    const auto x = a.file_of(name).bytes(name);
    const auto y = b.file_of(name).bytes(name);
    ASSERT_EQ(x.size(), y.size()) << name;
    EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size()), 0) << name;
  }
}

// A stories260K adapter on every projection, B ~ N(0, 0.04): a delta around a fifth of a 4-bit
// quantization step, the regime where requantizing erases much of it.
struct Fixture {
  TempDir tmp{"merge"};
  Model model = load_model(test::stories_dir());
  LoraAdapter adapter = test::adapter_with_random_b(model, kAll, 4, 8.0f, 0.04f, 17);
  fs::path adapter_dir = tmp / "adapter";
  fs::path q4_dir = tmp / "q4";
  Fixture() {
    save_adapter(adapter_dir, adapter, model, AdapterFormat::peft);
    ConvertOptions q;
    q.quantize_bits = 4;
    q.group_size = 32;
    convert_model(test::stories_dir(), q4_dir, q);
  }
  std::vector<MergeAdapter> adapters(double strength = 1.0) const {
    return {{AdapterFile::read(adapter_dir), strength}};
  }
};

TEST(Merge, StrengthZeroIsABitExactCopy) {
  LORA_REQUIRE_SHARED(test::kStories);
  Fixture f;
  const auto report = merge_adapters(test::stories_dir(), f.adapters(0.0), f.tmp / "float0");
  EXPECT_TRUE(report.merged.empty());
  EXPECT_EQ(report.skipped.size(), f.adapter.modules.size());
  expect_same_weights(test::stories_dir(), f.tmp / "float0");
  EXPECT_EQ(test::read_file(f.tmp / "float0" / "tokenizer.json"),
            test::read_file(test::stories_dir() / "tokenizer.json"));
  merge_adapters(f.q4_dir, f.adapters(0.0), f.tmp / "q0");
  expect_same_weights(f.q4_dir, f.tmp / "q0");
}

TEST(Merge, ConvertQuantizesLikeLoadTimeQuantization) {
  LORA_REQUIRE_SHARED(test::kStories);
  Fixture f;
  const json c = json::parse(test::read_file(f.q4_dir / "config.json"));
  EXPECT_EQ(c["quantization"], json({{"group_size", 32}, {"bits", 4}}));
  const auto w = WeightSet::open_dir(f.q4_dir);
  EXPECT_EQ(w.info("model.layers.0.self_attn.q_proj.weight").dtype, DType::U32);
  EXPECT_EQ(w.info("model.layers.0.self_attn.q_proj.weight").shape, (std::vector<int64_t>{64, 8}));
  EXPECT_EQ(w.info("model.layers.0.self_attn.q_proj.scales").shape, (std::vector<int64_t>{64, 2}));
  EXPECT_EQ(w.info("model.layers.0.mlp.down_proj.weight").dtype, DType::F32);  // in = 172
  LoadOptions q4;
  q4.quantize_bits = 4;
  q4.quantize_group_size = 32;
  EXPECT_TRUE(same_bits(logits(load_model(f.q4_dir)), logits(load_model(test::stories_dir(), q4))));
}

TEST(Merge, QuantizedBaseReportsDeltaKeptAndBaseFloatKeepsMore) {
  LORA_REQUIRE_SHARED(test::kStories);
  Fixture f;
  MergeOptions requant;
  const auto r1 = merge_adapters(f.q4_dir, f.adapters(), f.tmp / "requant", requant);
  MergeOptions from_float;
  from_float.base_float = test::stories_dir();
  const auto r2 = merge_adapters(f.q4_dir, f.adapters(), f.tmp / "from_float", from_float);
  ASSERT_EQ(r1.merged.size(), f.adapter.modules.size());
  ASSERT_EQ(r2.merged.size(), f.adapter.modules.size());
  const double kept_requant = r1.total.kept();
  const double kept_float = r2.total.kept();
  RecordProperty("delta_kept_requantize", std::to_string(kept_requant));
  RecordProperty("delta_kept_base_float", std::to_string(kept_float));
  EXPECT_GT(kept_float, kept_requant);
  EXPECT_LT(kept_requant, 0.9);  // a fifth of a step: requantizing snaps most of it back
  EXPECT_GT(r1.total.max_error, 0.0);
  // Quantized layers say so and get a warning below the threshold; down_proj (in 172) stays f32.
  int warned = 0;
  for (const auto& m : r1.merged) {
    const bool down = m.tensor.find("down_proj") != std::string::npos;
    EXPECT_EQ(m.storage, down ? "F32" : "q4g32") << m.tensor;
    if (down) {
      EXPECT_NEAR(m.fidelity.kept(), 1.0, 1e-6);
    }
    if (m.fidelity.kept() < 0.9) {
      ++warned;
      const bool named = std::any_of(r1.warnings.begin(), r1.warnings.end(), [&](const auto& w) {
        return w.find(m.tensor) != std::string::npos;
      });
      EXPECT_TRUE(named) << m.tensor;
    }
  }
  EXPECT_EQ(warned, static_cast<int>(r1.warnings.size()));
  EXPECT_GT(warned, 0);
  const json j = r1.to_json();
  EXPECT_EQ(j["layers"].size(), r1.merged.size());
  EXPECT_DOUBLE_EQ(j["total"]["delta_kept"].get<double>(), kept_requant);

  // Both outputs are quantized models that load.
  for (const char* out : {"requant", "from_float"}) {
    const json c = json::parse(test::read_file(f.tmp / out / "config.json"));
    EXPECT_EQ(c["quantization"]["bits"], 4) << out;
    EXPECT_EQ(load_model(f.tmp / out).layers[0].at(Proj::q).format, WeightFormat::Quantized);
  }
}

TEST(Merge, DequantizeMatchesTheRuntimePathOnTheQuantizedBase) {
  LORA_REQUIRE_SHARED(test::kStories);
  Fixture f;
  MergeOptions options;
  options.dequantize = true;
  options.float_dtype = DType::F32;
  const auto report = merge_adapters(f.q4_dir, f.adapters(), f.tmp / "deq", options);
  EXPECT_NEAR(report.total.kept(), 1.0, 1e-5);
  const json c = json::parse(test::read_file(f.tmp / "deq" / "config.json"));
  EXPECT_FALSE(c.contains("quantization"));
  EXPECT_EQ(c["torch_dtype"], "float32");
  const Model merged = load_model(f.tmp / "deq");
  EXPECT_EQ(merged.embed.format, WeightFormat::F32);
  const Model q4 = load_model(f.q4_dir);
  LoraAdapter adapter = load_adapter(f.adapter_dir, q4);
  EXPECT_LT(max_abs_diff(logits(merged), logits(q4, {&adapter})), 1e-4f);
}

TEST(Merge, ShardsAboveTheSizeLimit) {
  LORA_REQUIRE_SHARED(test::kStories);
  Fixture f;
  MergeOptions options;
  options.max_shard_bytes = 300'000;
  merge_adapters(test::stories_dir(), f.adapters(), f.tmp / "sharded", options);
  merge_adapters(test::stories_dir(), f.adapters(), f.tmp / "single");
  ASSERT_TRUE(fs::exists(f.tmp / "sharded" / "model.safetensors.index.json"));
  EXPECT_FALSE(fs::exists(f.tmp / "sharded" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(f.tmp / "sharded" / "model-00001-of-00004.safetensors"));
  expect_same_weights(f.tmp / "single", f.tmp / "sharded");
  EXPECT_TRUE(
      same_bits(logits(load_model(f.tmp / "single")), logits(load_model(f.tmp / "sharded"))));
}

std::string merge_error(const fs::path& adapter, const fs::path& out) {
  try {
    merge_adapters(test::stories_dir(),
                   std::vector<MergeAdapter>{{AdapterFile::read(adapter), 1.0}}, out);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(Merge, BadAdaptersFailAndWriteNothing) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED("adapters/peft-gemma3-270m-r4-qkvo");
  TempDir tmp("merge");
  // Another model's adapter: the error names the tensor and both shapes.
  const std::string msg =
      merge_error(test::shared_dir() / "adapters/peft-gemma3-270m-r4-qkvo", tmp / "out");
  EXPECT_NE(msg.find("lora_A.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[256, 640]"), std::string::npos) << msg;  // gemma k_proj
  EXPECT_NE(msg.find("[32, 64]"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(tmp / "out"));
  // An existing output folder is left as it was.
  fs::create_directories(tmp / "keep");
  test::write_file(tmp / "keep" / "marker", "old");
  EXPECT_FALSE(
      merge_error(test::shared_dir() / "adapters/peft-gemma3-270m-r4-qkvo", tmp / "keep").empty());
  EXPECT_EQ(test::read_file(tmp / "keep" / "marker"), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(tmp / "keep"), fs::directory_iterator()), 1);
  // Empty adapter and pickle file.
  fs::create_directories(tmp / "empty");
  write_safetensors(tmp / "empty" / "adapter_model.safetensors",
                    {TensorData::from_f32("base_model.model.lm_head.weight", {2, 2},
                                          std::vector<float>(4, 1.0f))});
  test::write_file(tmp / "empty" / "adapter_config.json",
                   R"({"peft_type":"LORA","r":4,"lora_alpha":8})");
  EXPECT_NE(merge_error(tmp / "empty", tmp / "out").find("no LoRA tensors"), std::string::npos);
  fs::create_directories(tmp / "pickle");
  test::write_file(tmp / "pickle" / "adapter_model.bin", "x");
  EXPECT_NE(merge_error(tmp / "pickle", tmp / "out").find("pickle"), std::string::npos);
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

TEST(MergeCli, MergesWithAJsonReportAndFailsCleanly) {
  LORA_REQUIRE_SHARED(test::kStories);
  Fixture f;
  auto r = test::run_lora({"--json", "merge", "--model", f.q4_dir.string(), "--adapter-path",
                           f.adapter_dir.string(), "--base-float", test::stories_dir().string(),
                           "--out", (f.tmp / "cli").string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["merged"], f.adapter.modules.size());
  EXPECT_GT(j["total"]["delta_kept"].get<double>(), 0.0);
  EXPECT_TRUE(fs::exists(f.tmp / "cli" / "model.safetensors"));

  r = test::run_lora({"merge", "--model", test::stories_dir().string(), "--adapter-path",
                      (test::shared_dir() / "adapters/peft-qwen2.5-0.5b-instruct-r8-qv").string(),
                      "--out", (f.tmp / "never").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("[896, 896]"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(f.tmp / "never"));
}

}  // namespace
}  // namespace lora
