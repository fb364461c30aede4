// `lora convert --out FILE.gguf`: stories260K written as llama.cpp's own converter writes it
// (every tensor byte for byte in F32, F16 and Q8_0, the same metadata), and in every type we write
// (and a Q4_K_M mix, from an MLX-quantized folder and from a GGUF file) read by llama.cpp and by
// loracpp with the same greedy text; the Q4_K_M/Q5_K_M/Q4_K_S mixes choose llama-quantize's
// types.
#include <gtest/gtest.h>

#include <algorithm>
#include <iostream>

#include "llama_cpp_oracle.h"
#include "train_fixtures.h"
#include "trainer/gguf_type_plan.h"
#include "trainer/io/gguf_file.h"

namespace lora {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

fs::path stories() { return test::shared_dir() / test::kStoriesModel; }
fs::path llama_cpp_file(const std::string& type) {
  return test::shared_dir() / "models/stories260K-gguf" / ("stories260K-" + type + ".gguf");
}

void convert(const fs::path& model, const fs::path& out, const std::string& type) {
  const auto r = test::run_lora(
      {"convert", "--model", model.string(), "--out", out.string(), "--q-type", type});
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

TEST(GgufConvert, SameFileAsLlamaCppsConverter) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-q8_0.gguf");
  test::TempDir tmp("gguf-convert");
  for (const std::string type : {"f32", "f16", "q8_0"}) {
    SCOPED_TRACE(type);
    convert(stories(), tmp / (type + ".gguf"), type);
    const GgufFile mine = GgufFile::open(tmp / (type + ".gguf"));
    const GgufFile ref = GgufFile::open(llama_cpp_file(type));
    ASSERT_EQ(mine.tensors().size(), ref.tensors().size());
    for (const GgufTensorInfo& t : ref.tensors()) {
      ASSERT_TRUE(mine.contains_tensor(t.name)) << t.name;
      const GgufTensorInfo& m = mine.tensor(t.name);
      EXPECT_EQ(m.type, t.type) << t.name;
      EXPECT_EQ(m.ne, t.ne) << t.name;
      const auto a = mine.bytes(m), b = ref.bytes(t);
      EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << t.name;
    }
    for (const auto& key : ref.metadata_order()) {
      if (key == "general.size_label" || key == "tokenizer.ggml.add_sep_token" ||
          key == "tokenizer.ggml.scores")  // ours rank the same merges; see below
        continue;
      ASSERT_NE(mine.find(key), nullptr) << key;
      const GgufValue &x = *mine.find(key), &y = *ref.find(key);
      EXPECT_TRUE(x.integer == y.integer && x.real == y.real && x.text == y.text &&
                  x.strings == y.strings && x.integers == y.integers)
          << key;
    }
    // SentencePiece scores: the pieces made by merges in the same order.
    const auto &ms = mine.find("tokenizer.ggml.scores")->reals,
               &rs = ref.find("tokenizer.ggml.scores")->reals;
    ASSERT_EQ(ms.size(), rs.size());
    for (std::size_t i = 260; i < 300; ++i) EXPECT_EQ(ms[i] < ms[i - 1], rs[i] < rs[i - 1]) << i;
  }
}

TEST(GgufConvert, EveryTypeSameGreedyTextAsLlamaCpp) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-f32.gguf");
  LORA_REQUIRE_LLAMA_CPP();
  test::TempDir tmp("gguf-convert");
  std::vector<fs::path> files;
  for (const std::string type : {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
                                 "q4_k", "q5_k", "q6_k", "q4_k_m", "iq4_nl", "iq4_xs"}) {
    files.push_back(tmp / ("stories-" + type + ".gguf"));
    convert(stories(), files.back(), type);
  }
  // From an MLX 4-bit folder (dequantized, then Q8_0) and from llama.cpp's own F32 file.
  auto q = test::run_lora({"convert", "--model", stories().string(), "--out",
                           (tmp / "mlx4").string(), "--quantize", "4", "--q-group-size", "32"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  files.push_back(tmp / "from-mlx4-q8_0.gguf");
  convert(tmp / "mlx4", files.back(), "q8_0");
  files.push_back(tmp / "from-gguf-q5_1.gguf");
  convert(llama_cpp_file("f32"), files.back(), "q5_1");
  EXPECT_EQ(GgufFile::open(files.back()).tensor("blk.0.attn_q.weight").type, GgmlType::Q5_1);

  const json prompt = {1, 403, 407, 261, 378};  // <s> "Once upon a time"
  json jobs = json::array();
  for (const auto& f : files)
    jobs.push_back({{"model", f.string()}, {"tokens", prompt}, {"greedy", 24}});
  // llama.cpp tokenizes with the tokenizer metadata we wrote as we do.
  jobs.push_back({{"model", files[0].string()}, {"prompt", "Once upon a time"}, {"greedy", 1}});
  const json refs = test::llama_cpp_jobs(jobs);
  ASSERT_EQ(refs.size(), files.size() + 1);
  EXPECT_EQ(refs.back()["input"], json({403, 407, 261, 378}));
  // Where the texts part, llama.cpp's log-probabilities of its token and ours at that position.
  // Only the files holding Q5_1 may part: llama.cpp computes those products on activations
  // rounded to Q8_1 (q5_1, q5_k's Q5_1 fallback on 64-wide rows, the GGUF file requantized).
  auto may_part = [](const fs::path& f) {
    const GgufFile file = GgufFile::open(f);
    return std::any_of(file.tensors().begin(), file.tensors().end(),
                       [](const GgufTensorInfo& t) { return t.type == GgmlType::Q5_1; });
  };
  std::size_t with_q5_1 = 0;
  for (const auto& f : files) with_q5_1 += may_part(f);
  EXPECT_EQ(with_q5_1, 3u);
  json near_ties = json::array();
  std::vector<std::pair<int64_t, int64_t>> picks;  // (llama.cpp's, ours) per near tie
  for (std::size_t i = 0; i < files.size(); ++i) {
    auto r = test::run_lora({"--json", "generate", "--model", files[i].string(), "--prompt",
                             "Once upon a time", "--max-tokens", "24"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json mine = json::parse(r.out)["tokens"], theirs = refs[i]["tokens"];
    ASSERT_EQ(mine.size(), theirs.size()) << files[i];
    std::size_t p = 0;
    while (p < mine.size() && mine[p] == theirs[p]) ++p;
    if (p == mine.size()) continue;
    EXPECT_TRUE(may_part(files[i])) << files[i] << " parts from llama.cpp's text at token " << p;
    json context = prompt;
    for (std::size_t k = 0; k < p; ++k) context.push_back(mine[k]);
    near_ties.push_back({{"model", files[i].string()}, {"tokens", context}, {"logprobs", true}});
    picks.emplace_back(theirs[p].get<int64_t>(), mine[p].get<int64_t>());
  }
  // Llama.cpp rounds the activations to 8 bits (Q8_0, or Q8_1 for Q4_1/Q5_1) in its dot products;
  // the texts may part only where its own choice is that close: within 0.05 nats.
  if (near_ties.empty()) return;
  const json lp = test::llama_cpp_jobs(near_ties);
  ASSERT_EQ(lp.size(), picks.size());
  for (std::size_t i = 0; i < picks.size(); ++i) {
    const json& last = lp[i]["logprobs"].back();
    const double gap = last[picks[i].first].get<double>() - last[picks[i].second].get<double>();
    std::cout << near_ties[i]["model"].get<std::string>() << ": texts part at a near tie, "
              << "llama.cpp's log-probability gap " << gap << "\n";
    EXPECT_LT(gap, 0.05) << near_ties[i]["model"];
  }
}

TEST(GgufConvert, MixesFollowLlamaQuantize) {
  const auto m = GgufTypePlan::parse("Q4_K_M");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->file_type(), 15u);
  auto type = [&](const GgufTypePlan& p, const std::string& name, int64_t cols = 4096,
                  bool tied = false) { return p.type_of(name, 2, cols, 32, tied); };
  // use_more_bits over 32 layers: 0-3, 28-31, and 6, 9, ..., 27.
  for (int layer : {0, 3, 6, 9, 27, 28, 31}) {
    EXPECT_EQ(type(*m, "blk." + std::to_string(layer) + ".attn_v.weight"), GgmlType::Q6_K);
    EXPECT_EQ(type(*m, "blk." + std::to_string(layer) + ".ffn_down.weight", 11008), GgmlType::Q6_K);
  }
  for (int layer : {4, 5, 7, 26})
    EXPECT_EQ(type(*m, "blk." + std::to_string(layer) + ".attn_v.weight"), GgmlType::Q4_K);
  EXPECT_EQ(type(*m, "blk.0.attn_q.weight"), GgmlType::Q4_K);
  // Phi-3's fused attn_qkv is an attn_v to llama-quantize.
  EXPECT_EQ(type(*m, "blk.0.attn_qkv.weight"), GgmlType::Q6_K);
  EXPECT_EQ(type(*m, "blk.4.attn_qkv.weight"), GgmlType::Q4_K);
  EXPECT_EQ(type(*m, "output.weight"), GgmlType::Q6_K);
  EXPECT_EQ(type(*m, "token_embd.weight"), GgmlType::Q4_K);
  EXPECT_EQ(type(*m, "token_embd.weight", 4096, true), GgmlType::Q6_K);
  EXPECT_EQ(type(*m, "output.weight", 576), GgmlType::Q8_0);  // rows not whole 256-blocks
  EXPECT_EQ(m->type_of("blk.0.attn_norm.weight", 1, 4096, 32, false), GgmlType::F32);
  // Llama.cpp's fallbacks for rows that are not whole blocks.
  EXPECT_EQ(type(*m, "blk.5.attn_q.weight", 64), GgmlType::Q5_0);
  EXPECT_EQ(type(*m, "blk.5.attn_q.weight", 172), GgmlType::F16);
  EXPECT_EQ(ggml_fallback_type(GgmlType::Q5_K, 96), GgmlType::Q5_1);
  EXPECT_EQ(ggml_fallback_type(GgmlType::Q6_K, 96), GgmlType::Q8_0);
  const auto m5 = GgufTypePlan::parse("q5_k_m");
  EXPECT_EQ(type(*m5, "blk.4.attn_q.weight"), GgmlType::Q5_K);
  EXPECT_EQ(type(*m5, "blk.0.attn_v.weight"), GgmlType::Q6_K);
  const auto s = GgufTypePlan::parse("q4_k_s");
  EXPECT_EQ(type(*s, "blk.3.attn_v.weight"), GgmlType::Q5_K);
  EXPECT_EQ(type(*s, "blk.4.attn_v.weight"), GgmlType::Q4_K);
  EXPECT_EQ(type(*s, "blk.3.ffn_down.weight"), GgmlType::Q5_K);
  EXPECT_EQ(type(*s, "blk.4.ffn_down.weight"), GgmlType::Q4_K);
  // Q3_K_M over 32 layers: attn_v Q5_K on layers 0-1, ffn_down on layers 0-1 (32 / 16).
  const auto q3m = GgufTypePlan::parse("Q3_K_M");
  ASSERT_TRUE(q3m);
  EXPECT_EQ(q3m->file_type(), 12u);
  EXPECT_EQ(type(*q3m, "blk.1.attn_v.weight"), GgmlType::Q5_K);
  EXPECT_EQ(type(*q3m, "blk.2.attn_v.weight"), GgmlType::Q4_K);
  EXPECT_EQ(type(*q3m, "blk.1.ffn_down.weight", 11008), GgmlType::Q5_K);
  EXPECT_EQ(type(*q3m, "blk.2.ffn_down.weight", 11008), GgmlType::Q4_K);
  EXPECT_EQ(type(*q3m, "blk.9.attn_output.weight"), GgmlType::Q4_K);
  EXPECT_EQ(type(*q3m, "blk.9.attn_k.weight"), GgmlType::Q3_K);
  EXPECT_EQ(type(*q3m, "blk.9.ffn_up.weight"), GgmlType::Q3_K);
  EXPECT_EQ(type(*q3m, "output.weight"), GgmlType::Q6_K);
  EXPECT_EQ(type(*q3m, "blk.9.ffn_up.weight", 576), GgmlType::Q4_0);  // not whole 256-blocks
  const auto q3l = GgufTypePlan::parse("q3_k_l");
  EXPECT_EQ(q3l->file_type(), 13u);
  for (const char* name :
       {"blk.20.attn_v.weight", "blk.20.ffn_down.weight", "blk.20.attn_output.weight"})
    EXPECT_EQ(type(*q3l, name), GgmlType::Q5_K) << name;
  EXPECT_EQ(type(*q3l, "blk.20.attn_q.weight"), GgmlType::Q3_K);
  const auto q3s = GgufTypePlan::parse("q3_k_s");
  EXPECT_EQ(q3s->file_type(), 11u);
  EXPECT_EQ(type(*q3s, "blk.0.attn_v.weight"), GgmlType::Q3_K);
  EXPECT_EQ(type(*q3s, "blk.0.ffn_down.weight"), GgmlType::Q3_K);
  EXPECT_EQ(type(*q3s, "output.weight"), GgmlType::Q6_K);
  // A plain type is every matrix's.
  const auto q8 = GgufTypePlan::parse("Q8_0");
  EXPECT_EQ(type(*q8, "output.weight"), GgmlType::Q8_0);
  EXPECT_EQ(q8->file_type(), 7u);
  EXPECT_FALSE(GgufTypePlan::parse("q3_k_xl"));
}

}  // namespace
}  // namespace lora

namespace lora {
namespace {

// Bad requests fail before anything is written, naming what is wrong.
TEST(GgufConvert, RefusesWhatItCannotWrite) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  test::TempDir tmp("gguf-convert");
  const auto out = tmp / "x.gguf";
  auto expect_refused = [&](std::vector<std::string> args, const std::string& message) {
    const auto r = test::run_lora(args);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_FALSE(fs::exists(out));
  };
  const std::string model = stories().string();
  expect_refused({"convert", "--model", model, "--out", out.string(), "--q-type", "q3_k_xl"},
                 "unknown type 'q3_k_xl'");
  expect_refused({"convert", "--model", model, "--out", out.string(), "--quantize", "4"},
                 "takes --q-type");
  expect_refused(
      {"convert", "--model", model, "--out", (tmp / "folder").string(), "--q-type", "q8_0"},
      "--q-type applies to a .gguf --out only");
  // A model llama.cpp's runtime would run otherwise: Gemma 2 scales its queries by
  // 1/sqrt(head_dim) whatever query_pre_attn_scalar says (but on the 27B shape).
  fs::create_directories(tmp / "gemma");
  for (const char* f : {"model.safetensors", "tokenizer.json"})
    fs::copy_file(stories() / f, tmp / "gemma" / f);
  json config = json::parse(test::read_file(stories() / "config.json"));
  config["model_type"] = "gemma2";
  config["architectures"] = {"Gemma2ForCausalLM"};
  config["head_dim"] = 8;
  config["query_pre_attn_scalar"] = 100;
  test::write_file(tmp / "gemma" / "config.json", config.dump());
  expect_refused({"convert", "--model", (tmp / "gemma").string(), "--out", out.string()},
                 "query_pre_attn_scalar 100");
}

}  // namespace
}  // namespace lora
