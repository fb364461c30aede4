// Generation: the sampler's rules, and `lora generate` / `lora inspect` end to end on stories260K.
#include <gtest/gtest.h>

#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "tests/support/test_support.h"
#include "trainer/decoding.h"
#include "trainer/generate.h"
#include "trainer/model.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

TEST(Sampler, GreedyIsArgmax) {
  Sampler s({0.0f, 1.0f, 0});
  const std::vector<float> logits{0.1f, 3.0f, -1.0f, 2.9f};
  EXPECT_EQ(s.sample(logits), 1);
}

TEST(Sampler, SameSeedSameDraws) {
  const std::vector<float> logits{0.0f, 0.5f, 1.0f, 0.2f, -0.3f};
  Sampler a({1.0f, 1.0f, 42}), b({1.0f, 1.0f, 42});
  for (int i = 0; i < 50; ++i) EXPECT_EQ(a.sample(logits), b.sample(logits));
}

TEST(Sampler, FrequenciesFollowTheSoftmax) {
  // logits log(1), log(2), log(7): probabilities 0.1, 0.2, 0.7 at temperature 1.
  const std::vector<float> logits{0.0f, std::log(2.0f), std::log(7.0f)};
  Sampler s({1.0f, 1.0f, 7});
  std::map<int, int> count;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++count[s.sample(logits)];
  EXPECT_NEAR(count[0] / double(n), 0.1, 0.015);
  EXPECT_NEAR(count[1] / double(n), 0.2, 0.015);
  EXPECT_NEAR(count[2] / double(n), 0.7, 0.015);
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  // 0.7 + 0.2 reaches top_p 0.85: token 0 (0.1) is never drawn.
  const std::vector<float> logits{0.0f, std::log(2.0f), std::log(7.0f)};
  Sampler s({1.0f, 0.85f, 3});
  std::map<int, int> count;
  for (int i = 0; i < 5000; ++i) ++count[s.sample(logits)];
  EXPECT_EQ(count[0], 0);
  EXPECT_NEAR(count[2] / 5000.0, 0.7 / 0.9, 0.03);
  Sampler only_top({1.0f, 0.5f, 3});
  for (int i = 0; i < 100; ++i) EXPECT_EQ(only_top.sample(logits), 2);
}

TEST(Sampler, RejectsBadSettings) {
  EXPECT_THROW(Sampler({-1.0f, 1.0f, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0f, 0.0f, 0}), std::invalid_argument);
  EXPECT_THROW(Sampler({1.0f, 1.5f, 0}), std::invalid_argument);
}

fs::path stories() { return test::shared_dir() / "models/stories260K"; }

// The reference story (VERIFY.txt), from "Once upon a time" to the end of its text block.
std::string reference_story() {
  const std::string verify = test::read_file(stories() / "VERIFY.txt");
  const std::string key = "generated text:\n";
  const auto begin = verify.find(key);
  if (begin == std::string::npos) return {};
  const auto end = verify.find("\n\n", begin);
  return verify.substr(begin + key.size(), end - begin - key.size());
}

TEST(GenerateCli, GreedyStoryFromBosEqualsTheReference) {
  LORA_REQUIRE_SHARED("models/stories260K/VERIFY.txt");
  const std::string want = reference_story();
  ASSERT_GT(want.size(), 100u);
  auto r = test::run_lora({"generate", "--model", stories().string(), "--max-tokens", "200"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, want + "\n");
  EXPECT_NE(r.err.find("tokens/s"), std::string::npos) << r.err;

  auto j =
      test::run_lora({"--json", "generate", "--model", stories().string(), "--max-tokens", "200"});
  ASSERT_EQ(j.exit_code, 0) << j.err;
  const json out = json::parse(j.out);
  EXPECT_EQ(out["text"], want);
  EXPECT_EQ(out["generated_tokens"], 200);
  EXPECT_EQ(out["stop_reason"], "max_tokens");
}

// With the KV cache in halves the greedy story is still the reference's (stories260K); a type
// that is not f32 or f16 is refused by name.
TEST(GenerateCli, HalfKvCacheKeepsTheReferenceStory) {
  LORA_REQUIRE_SHARED("models/stories260K/VERIFY.txt");
  const std::string want = reference_story();
  ASSERT_GT(want.size(), 100u);
  auto r = test::run_lora({"--json", "generate", "--model", stories().string(), "--max-tokens",
                           "200", "--kv-cache-type", "f16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["text"], want);
  auto bad = test::run_lora({"generate", "--model", stories().string(), "--kv-cache-type", "q8"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--kv-cache-type"), std::string::npos) << bad.err;
}

// Int8 decode activations on a 4-bit stories260K (groups of 32: every projection but the
// 172-wide down): `lora generate --decode-activations int8`, and `lora generate` without the flag,
// give the greedy ids that the library's Decoding gives with GemvActivations::Int8, and with f32
// those of f32 (on the machine this was written on the two settings part after 165 tokens in the
// Release build and earlier in the sanitizer build, so the flag is seen to reach the products;
// where they happen to agree for 200 tokens this cannot tell). A value that is not f32 or int8 is
// refused by name.
TEST(GenerateCli, DecodeActivationsReachTheProductsInt8ByDefault) {
  LORA_REQUIRE_SHARED("models/stories260K/model.safetensors");
  const Model model = load_model(stories(), {.quantize_bits = 4, .quantize_group_size = 32});
  auto library = [&](GemvActivations activations) {
    GenerateOptions options;
    options.max_tokens = 200;
    options.decode_activations = activations;
    for (int64_t id : model.config.eos_token_ids) options.stop_ids.push_back(int32_t(id));
    Decoding d(model, {}, {int32_t(model.config.bos_token_id)}, options);
    while (d.next()) {
    }
    return std::vector<int>(d.tokens().begin(), d.tokens().end());
  };
  auto cli = [](const std::string& activations) {
    std::vector<std::string> args{"--json",         "generate", "--model",    stories().string(),
                                  "--max-tokens",   "200",      "--quantize", "4",
                                  "--q-group-size", "32"};
    if (!activations.empty()) args.insert(args.end(), {"--decode-activations", activations});
    auto r = test::run_lora(args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out)["tokens"].get<std::vector<int>>();
  };
  const std::vector<int> int8 = library(GemvActivations::Int8);
  EXPECT_EQ(int8.size(), 200u);
  EXPECT_EQ(cli("int8"), int8);
  EXPECT_EQ(cli(""), int8);
  EXPECT_EQ(cli("f32"), library(GemvActivations::F32));
  auto bad =
      test::run_lora({"generate", "--model", stories().string(), "--decode-activations", "int4"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--decode-activations"), std::string::npos) << bad.err;
}

TEST(GenerateCli, SamplingIsSeededAndStopsOnBos) {
  LORA_REQUIRE_SHARED("models/stories260K/model.safetensors");
  auto run = [](const std::string& seed) {
    auto r = test::run_lora({"--json", "generate", "--model", stories().string(), "--prompt",
                             "Once upon a time", "--temp", "0.8", "--top-p", "0.9", "--seed", seed,
                             "--max-tokens", "400", "--stop-on-bos"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  };
  const json a = run("1"), b = run("1"), c = run("2");
  EXPECT_EQ(a["tokens"], b["tokens"]);
  EXPECT_NE(a["tokens"], c["tokens"]);
  // The model separates stories with BOS; within 400 tokens at least one run reaches it.
  EXPECT_TRUE(a["stop_reason"] == "stop_token" || c["stop_reason"] == "stop_token");
  EXPECT_EQ(a["prompt_tokens"], 5);  // BOS + 4 pieces
}

TEST(GenerateCli, QuantizedAndErrors) {
  LORA_REQUIRE_SHARED("models/stories260K/model.safetensors");
  auto q = test::run_lora({"-q", "generate", "--model", stories().string(), "--quantize", "8",
                           "--q-group-size", "32", "--max-tokens", "20"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_GT(q.out.size(), 20u);
  EXPECT_EQ(q.err, "");

  test::TempDir tmp("gen");
  auto missing = test::run_lora({"generate", "--model", tmp.path().string()});
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("config.json"), std::string::npos) << missing.err;
}

// An id past the tokenizer (a padded vocabulary row) writes no text and leaves the rest intact.
TEST(StreamDecoder, PaddingIdsWriteNoText) {
  LORA_REQUIRE_SHARED("models/stories260K/tokenizer.json");
  const auto tok = data::Tokenizer::load(stories() / "tokenizer.json");
  const std::vector<int32_t> ids = tok.encode("Once upon a time");
  ASSERT_GT(ids.size(), 2u);
  StreamDecoder plain(tok), padded(tok);
  std::string a, b;
  for (int32_t id : ids) a += plain.push(id);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    b += padded.push(ids[i]);
    if (i == 1) {
      EXPECT_EQ(padded.push(int32_t(tok.vocab_size()) + 7), "");
    }
  }
  a += plain.finish();
  b += padded.finish();
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, "Once upon a time");
}

TEST(InspectCli, FileAndModelFolder) {
  LORA_REQUIRE_SHARED("models/stories260K/model.safetensors");
  auto f = test::run_lora({"--json", "inspect", (stories() / "model.safetensors").string()});
  ASSERT_EQ(f.exit_code, 0) << f.err;
  const json file = json::parse(f.out);
  EXPECT_EQ(file["tensors"].size(), 47u);
  EXPECT_EQ(file["metadata"]["format"], "pt");
  EXPECT_EQ(file["total_bytes"], 260032u * 4);

  auto d = test::run_lora({"--json", "inspect", stories().string()});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  const json dir = json::parse(d.out);
  EXPECT_EQ(dir["config"]["model_type"], "llama");
  EXPECT_EQ(dir["config"]["num_kv_heads"], 4);
  EXPECT_TRUE(dir["quantized"].empty());

  auto human = test::run_lora({"inspect", stories().string()});
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("model.layers.4.mlp.down_proj.weight"), std::string::npos);
  EXPECT_NE(human.out.find("[64, 172]"), std::string::npos);

  test::TempDir tmp("inspect");
  test::write_file(tmp / "pytorch_model.bin", "x");
  auto pickle = test::run_lora({"inspect", (tmp / "pytorch_model.bin").string()});
  EXPECT_NE(pickle.exit_code, 0);
  EXPECT_NE(pickle.err.find("pickle"), std::string::npos) << pickle.err;
  test::write_file(tmp / "bad.safetensors", std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8));
  auto bad = test::run_lora({"inspect", (tmp / "bad.safetensors").string()});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("bad.safetensors"), std::string::npos) << bad.err;
}

TEST(InspectCli, ReportsQuantizedLayers) {
  LORA_REQUIRE_TORCH();
  test::TempDir tmp("inspect");
  const auto dir = tmp / "m";
  auto mk = test::run_program(
      {test::torch_python(), (fs::path(LORA_SOURCE_DIR) / "scripts/make_random_model.py").string(),
       dir.string(), "--arch", "qwen2", "--quantize-bits", "4", "--q-group-size", "64", "--dtype",
       "bf16"});
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  auto r = test::run_lora({"--json", "inspect", dir.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["config"]["quantization"]["bits"], 4);
  bool saw_q = false;
  for (const auto& q : j["quantized"]) {
    EXPECT_EQ(q["bits"], 4);
    EXPECT_EQ(q["group_size"], 64);
    if (q["module"] == "model.layers.0.self_attn.q_proj") saw_q = true;
    EXPECT_NE(q["module"], "model.layers.0.mlp.down_proj");  // in = 96 stays float
  }
  EXPECT_TRUE(saw_q);
}

}  // namespace
}  // namespace lora
