// GGUF models as the frozen base: llama.cpp's own stories260K files (F32, F16, Q8_0) load with
// q/k rows back in Hugging Face order (the same weights and logits as the safetensors folder),
// their tokenizer metadata gives tokenizer.json's merges and ids, and greedy text equals
// llama.cpp's own (../shared/models/stories260K-gguf/README.md).
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/frozen_gemv.h"
#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/gguf_model.h"
#include "trainer/gguf_tokenizer.h"
#include "trainer/setting_error.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

using json = nlohmann::json;

std::filesystem::path gguf(const std::string& type) {
  return test::shared_dir() / "models/stories260K-gguf" / ("stories260K-" + type + ".gguf");
}
std::filesystem::path folder() { return test::shared_dir() / "models/stories260K"; }

// llama.cpp's converter permutes with reshape(heads, 2, hd/2, cols).swapaxes(1, 2): row
// (h, i, j) of the file is row (h, j, i) of the Hugging Face weight.
TEST(GgufModel, QkRowMapInvertsTheConvertersPermutation) {
  const int64_t heads = 3, hd = 8;
  std::vector<int64_t> hf_of_file(heads * hd);
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < hd / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) hf_of_file[h * hd + i * 2 + j] = h * hd + j * (hd / 2) + i;
  for (int64_t r = 0; r < heads * hd; ++r) EXPECT_EQ(gguf_qk_row_to_hf(r, hd), hf_of_file[r]) << r;
}

TEST(GgufModel, F32FileHoldsTheSafetensorsWeightsAndLogits) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-f32.gguf");
  const Model hf = load_model(folder());
  const Model gg = load_model(gguf("f32"));
  EXPECT_EQ(gg.config.num_layers, 5);
  EXPECT_EQ(gg.config.num_kv_heads, 4);
  EXPECT_TRUE(gg.config.tie_word_embeddings);
  ASSERT_EQ(gg.layers[0].at(Proj::q).format, WeightFormat::Ggml);
  for (std::size_t l = 0; l < hf.layers.size(); ++l)
    for (int p = 0; p < kNumProj; ++p)
      ASSERT_EQ(gg.layers[l].proj[p].to_f32(), hf.layers[l].proj[p].to_f32())
          << l << " " << proj_name(Proj(p));
  EXPECT_EQ(gg.final_norm, hf.final_norm);
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 429, 98, 57};
  const Tensor a = forward_logits(hf, {}, ids, 1, int64_t(ids.size()));
  const Tensor b = forward_logits(gg, {}, ids, 1, int64_t(ids.size()));
  ASSERT_EQ(a.data.size(), b.data.size());
  for (std::size_t i = 0; i < a.data.size(); ++i) ASSERT_NEAR(a.data[i], b.data[i], 1e-5f) << i;
}

TEST(GgufModel, QuantizedFilesKeepTheirTypes) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-q8_0.gguf");
  const Model m = load_model(gguf("q8_0"));
  EXPECT_EQ(m.layers[0].at(Proj::q).ggml.type, GgmlType::Q8_0);
  EXPECT_EQ(m.layers[0].at(Proj::down).ggml.type, GgmlType::F16);  // 172 columns: not whole blocks
  EXPECT_EQ(m.embed.ggml.type, GgmlType::Q8_0);
  EXPECT_LT(m.stored_bytes(), load_model(gguf("f32")).stored_bytes() / 3);
  LoadOptions q;
  q.quantize_bits = 4;
  EXPECT_THROW(load_model(gguf("q8_0"), q), SettingError);
}

// Decode steps with int8 activations on the Q8_0 file: the logits move where the CPU has the
// int8 block kernels (AVX2 and up; the portable build keeps f32 products), by less than 5% of their
// range, and the greedy token of each step stays the f32 one or a near tie of it.
TEST(GgufModel, Int8DecodeActivationsOnTheQ8_0FileStayNearF32) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-q8_0.gguf");
  const Model model = load_model(gguf("q8_0"));
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376};
  KVCache exact = KVCache::create(model.config, 16), rounded = exact;
  float range = 0;
  double worst = 0;
  for (std::size_t t = 0; t < ids.size(); ++t) {
    const auto step = std::span(ids).subspan(t, 1);
    const Tensor a = forward_cached(model, {}, exact, step);
    const Tensor b =
        forward_cached(model, {}, rounded, step, CachedLogits::Last, GemvActivations::Int8);
    for (std::size_t i = 0; i < a.data.size(); ++i) {
      range = std::max(range, std::abs(a.data[i]));
      worst = std::max(worst, double(std::abs(a.data[i] - b.data[i])));
    }
    const auto best = std::max_element(b.data.begin(), b.data.end()) - b.data.begin();
    EXPECT_GT(a.data[best], *std::max_element(a.data.begin(), a.data.end()) - 0.1f) << "step " << t;
  }
  if (gemv_isa() == GemvIsa::Scalar)
    EXPECT_EQ(worst, 0.0);
  else
    EXPECT_GT(worst, 0.0);
  EXPECT_LT(worst, 5e-2 * range);
}

TEST(GgufModel, TokenizerMetadataGivesTokenizerJsonsMergesAndIds) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-f16.gguf");
  const GgufFile f = GgufFile::open(gguf("f16"));
  const json built = gguf_tokenizer_json(f);
  std::ifstream in(folder() / "tokenizer.json");
  const json want = json::parse(in);
  json want_merges = json::array();
  for (const auto& m : want["model"]["merges"]) {
    if (m.is_array()) {
      want_merges.push_back(m);
    } else {
      const auto s = m.get<std::string>();
      want_merges.push_back({s.substr(0, s.find(' ')), s.substr(s.find(' ') + 1)});
    }
  }
  EXPECT_EQ(built["model"]["merges"], want_merges);
  EXPECT_EQ(built["model"]["vocab"], want["model"]["vocab"]);
  const auto mine = load_model_tokenizer(gguf("f16"));
  const auto theirs = data::Tokenizer::load(folder());
  for (const std::string text : {"Once upon a time, there was a little girl named Lily.",
                                 "Hello\nworld! \xc3\xa9\xe2\x82\xac 123 Tom's dog", "a", "",
                                 "<s>Lily</s> said: \"Yes\"\t"}) {
    EXPECT_EQ(mine.encode(text, true), theirs.encode(text, true)) << text;
    const auto ids = theirs.encode(text, false);
    EXPECT_EQ(mine.decode(ids), theirs.decode(ids)) << text;
  }
  const auto config = load_model_tokenizer_config(gguf("f16"));
  EXPECT_EQ(config.bos_token, "<s>");
  EXPECT_EQ(config.eos_token, "</s>");
  EXPECT_TRUE(config.add_bos_token);
}

TEST(GgufModel, GreedyTextEqualsLlamaCppOnEveryFile) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-q8_0.gguf");
  // llama.cpp (node-llama-cpp 3.21.1) greedy from "Once upon a time", 24 tokens, on all three.
  const std::string want =
      ", there was a little girl named Lily. She loved to play outside in the p";
  ASSERT_NE(test::read_file(gguf("f32").parent_path() / "README.md").find(want), std::string::npos);
  for (const char* type : {"f32", "f16", "q8_0"}) {
    auto r = test::run_lora({"--json", "generate", "--model", gguf(type).string(), "--prompt",
                             "Once upon a time", "--max-tokens", "24"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(json::parse(r.out)["text"], want) << type;
  }
}

TEST(GgufModel, InspectTokenizeAndEvalTakeAGgufFile) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-q8_0.gguf");
  LORA_REQUIRE_SHARED(test::kStoriesText);
  auto i = test::run_lora({"--json", "inspect", gguf("q8_0").string()});
  ASSERT_EQ(i.exit_code, 0) << i.err;
  const json info = json::parse(i.out);
  EXPECT_EQ(info["config"]["num_layers"], 5);
  EXPECT_EQ(info["metadata"]["tokenizer.ggml.tokens"], "[512 string]");
  EXPECT_EQ(info["metadata"]["general.architecture"], "llama");
  bool saw_q = false;
  for (const auto& t : info["tensors"])
    if (t["name"] == "blk.0.attn_q.weight") {
      saw_q = true;
      EXPECT_EQ(t["dtype"], "Q8_0");
      EXPECT_EQ(t["shape"], json::array({64, 64}));
      EXPECT_EQ(t["bytes"], 64 * 68);
    }
  EXPECT_TRUE(saw_q);

  const std::string line = "{\"text\": \"Once upon a time, Lily said hi.\"}\n";
  auto a = test::run_lora({"tokenize", "--model", gguf("f16").string()}, line);
  auto b = test::run_lora({"tokenize", "--model", folder().string()}, line);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);

  test::TempDir tmp("gguf-eval");
  test::make_story_data(tmp / "data");
  auto eval = [&](const std::filesystem::path& model) {
    auto r = test::run_lora({"--json", "eval", "--model", model.string(), "--no-adapter", "--data",
                             (tmp / "data").string(), "--split", "valid"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  };
  const json from_gguf = eval(gguf("f32")), from_folder = eval(folder());
  EXPECT_NEAR(from_gguf["loss"].get<double>(), from_folder["loss"].get<double>(), 1e-6);
}

}  // namespace
}  // namespace lora
