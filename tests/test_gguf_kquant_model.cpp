// A random Llama whose dimensions allow K-quants (multiples of 256), written as GGUF in a
// Q4_K_M-like mix (Q4_K, with Q6_K for v, down and the head), all-Q5_K, a Q2_K/Q3_K mix and an
// IQ4_XS/IQ4_NL mix: the
// real llama.cpp's log-probabilities agree with ours within the noise of its own activation
// quantization, and training on it lowers the loss.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "gguf_test_util.h"
#include "llama_cpp_oracle.h"
#include "train_fixtures.h"
#include "trainer/gguf_model.h"
#include "trainer/io/gguf_file.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

using json = nlohmann::json;

constexpr int64_t kHidden = 256, kFfn = 512, kHeads = 4, kKvHeads = 2, kLayers = 2;

struct Mix {
  std::string name;
  GgmlType attn, v, ffn, down, embed, head;
};

std::vector<std::byte> f32_bytes(const std::vector<float>& v) {
  std::vector<std::byte> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// stories260K's tokenizer metadata (vocabulary 512) on random K-quant weights.
void write_random_model(const std::filesystem::path& out, const Mix& mix, unsigned seed) {
  const GgufFile stories =
      GgufFile::open(test::shared_dir() / "models/stories260K-gguf/stories260K-f32.gguf");
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_string("general.name", "random-" + mix.name);
  w.set_u32("llama.block_count", kLayers);
  w.set_u32("llama.context_length", 256);
  w.set_u32("llama.embedding_length", kHidden);
  w.set_u32("llama.feed_forward_length", kFfn);
  w.set_u32("llama.attention.head_count", kHeads);
  w.set_u32("llama.attention.head_count_kv", kKvHeads);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_u32("llama.rope.dimension_count", kHidden / kHeads);
  for (const auto& key : stories.metadata_order())
    if (key.rfind("tokenizer.", 0) == 0) w.set(key, *stories.find(key));
  const int64_t vocab = 512, kv = kKvHeads * (kHidden / kHeads);
  unsigned s = seed;
  auto matrix = [&](const std::string& name, GgmlType t, int64_t rows, int64_t cols,
                    float max_abs) {
    w.add_tensor(name, t, {rows, cols}, test::random_ggml_bytes(t, rows, cols, ++s, max_abs));
  };
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> norm(0.8f, 1.2f);
  auto norm_vector = [&](const std::string& name) {
    std::vector<float> v(kHidden);
    for (auto& x : v) x = norm(rng);
    w.add_tensor(name, GgmlType::F32, {kHidden}, f32_bytes(v));
  };
  matrix("token_embd.weight", mix.embed, vocab, kHidden, 1.0f);
  matrix("output.weight", mix.head, vocab, kHidden, 0.3f);
  norm_vector("output_norm.weight");
  for (int64_t l = 0; l < kLayers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".";
    matrix(b + "attn_q.weight", mix.attn, kHidden, kHidden, 0.15f);
    matrix(b + "attn_k.weight", mix.attn, kv, kHidden, 0.15f);
    matrix(b + "attn_v.weight", mix.v, kv, kHidden, 0.15f);
    matrix(b + "attn_output.weight", mix.attn, kHidden, kHidden, 0.1f);
    matrix(b + "ffn_gate.weight", mix.ffn, kFfn, kHidden, 0.15f);
    matrix(b + "ffn_up.weight", mix.ffn, kFfn, kHidden, 0.15f);
    matrix(b + "ffn_down.weight", mix.down, kHidden, kFfn, 0.1f);
    norm_vector(b + "attn_norm.weight");
    norm_vector(b + "ffn_norm.weight");
  }
  w.write(out);
}

const Mix kMixes[] = {
    {"q4_k_m", GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_K,
     GgmlType::Q6_K},
    {"q5_k", GgmlType::Q5_K, GgmlType::Q5_K, GgmlType::Q5_K, GgmlType::Q5_K, GgmlType::Q5_K,
     GgmlType::Q6_K},
    {"q2_k_q3_k", GgmlType::Q3_K, GgmlType::Q3_K, GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q2_K,
     GgmlType::Q3_K},
    {"iq4_xs_nl", GgmlType::IQ4_XS, GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::IQ4_NL,
     GgmlType::IQ4_XS, GgmlType::IQ4_NL},
};

// llama.cpp multiplies K-quant weights by activations rounded to Q8_K (8-bit codes per 256
// values, so each product's input carries a relative error up to 1/254 of its block's largest
// value); we multiply by the f32 activations. That rounding is the whole difference: the weights
// are the same blocks. Measured: worst 0.025 (Q5_K) to 0.096 (IQ4_XS/IQ4_NL, whose products it
// feeds Q8_0 and Q8_K activations), mean 0.003 to 0.014 on
// log-probabilities spanning 10 to 12 units; a misread block moves them by whole units. The
// bounds (worst 0.15, mean 0.02) leave room for other CPUs' rounding.
TEST(GgufKQuantModel, LlamaCppLogProbabilitiesAgreeWithinActivationRounding) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-f32.gguf");
  LORA_REQUIRE_LLAMA_CPP();
  test::TempDir tmp("kquant");
  const std::vector<int32_t> ids = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315};
  json jobs = json::array();
  for (const Mix& mix : kMixes) {
    write_random_model(tmp / (mix.name + ".gguf"), mix, 17);
    jobs.push_back(
        {{"model", (tmp / (mix.name + ".gguf")).string()}, {"tokens", ids}, {"logprobs", true}});
  }
  const json refs = test::llama_cpp_jobs(jobs);
  ASSERT_EQ(refs.size(), std::size(kMixes));
  for (std::size_t m = 0; m < std::size(kMixes); ++m) {
    const Mix& mix = kMixes[m];
    const Model model = load_model(tmp / (mix.name + ".gguf"));
    ASSERT_EQ(model.layers[0].at(Proj::q).ggml.type, mix.attn);
    const Tensor logits = forward_logits(model, {}, ids, 1, int64_t(ids.size()));
    const json& ref = refs[m];
    const auto c = test::compare_logprobs(logits.data, 512, ref["logprobs"]);
    RecordProperty(mix.name + "_max_abs_logprob_difference", std::to_string(c.worst));
    RecordProperty(mix.name + "_mean_abs_logprob_difference", std::to_string(c.mean));
    EXPECT_LT(c.worst, 0.15) << mix.name;
    EXPECT_LT(c.mean, 0.02) << mix.name;
    EXPECT_GT(c.spread, 2.0) << mix.name << ": a flat distribution would make the comparison empty";
  }
}

TEST(GgufKQuantModel, TrainingLowersTheLoss) {
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-f32.gguf");
  LORA_REQUIRE_SHARED(test::kStoriesText);
  test::TempDir tmp("kquant");
  write_random_model(tmp / "m.gguf", kMixes[0], 5);
  test::make_story_data(tmp / "data");
  auto r = test::run_lora({"--threads",
                           "1",
                           "--json",
                           "train",
                           "--model",
                           (tmp / "m.gguf").string(),
                           "--data",
                           (tmp / "data").string(),
                           "--adapter-path",
                           (tmp / "a").string(),
                           "--iters",
                           "30",
                           "--batch-size",
                           "4",
                           "--max-seq-length",
                           "48",
                           "--learning-rate",
                           "2e-3",
                           "--num-layers",
                           "-1",
                           "--lora-keys",
                           "q_proj,v_proj,o_proj,down_proj",
                           "--steps-per-report",
                           "5",
                           "--steps-per-eval",
                           "0",
                           "--save-every",
                           "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<double> losses;
  std::ifstream f(tmp / "a" / "metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    const auto j = json::parse(line);
    if (j["type"] == "train") losses.push_back(j["loss"].get<double>());
  }
  ASSERT_GE(losses.size(), 4u);
  EXPECT_LT(losses.back(), losses.front() - 0.3) << losses.front() << " -> " << losses.back();

  // Merged back into the K-quant file: each tensor keeps its type (requantized), and the report
  // says how much of the change the 4- and 6-bit blocks keep (measured: 100.0%, norm ratio 1.002).
  auto m =
      test::run_lora({"--json", "merge", "--model", (tmp / "m.gguf").string(), "--adapter-path",
                      (tmp / "a").string(), "--out", (tmp / "merged.gguf").string()});
  ASSERT_EQ(m.exit_code, 0) << m.err;
  const json report = json::parse(m.out);
  RecordProperty("q4_k_m_merge_delta_kept", std::to_string(report["delta_kept"].get<double>()));
  RecordProperty("q4_k_m_merge_norm_ratio", std::to_string(report["norm_ratio"].get<double>()));
  EXPECT_GT(report["delta_kept"].get<double>(), 0.9);
  EXPECT_LT(report["norm_ratio"].get<double>(), 1.5);
  const Model merged = load_model(tmp / "merged.gguf");
  EXPECT_EQ(merged.layers[0].at(Proj::q).ggml.type, GgmlType::Q4_K);
  EXPECT_EQ(merged.layers[0].at(Proj::v).ggml.type, GgmlType::Q6_K);
}

}  // namespace
}  // namespace lora
