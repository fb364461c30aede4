// Every family in GGUF as llama.cpp's converter writes it and its runtime reads it: a random tiny
// Hugging Face model of each family (Gemma 3 and 2 with sliding windows shorter than the prompt
// and soft-capping, Phi-3 with fused projections, partial rotary and LongRoPE, SmolLM3 without
// RoPE on every 4th layer, Mistral) converted by `lora convert` to F32 and Q8_0 GGUF. Our
// log-probabilities on the F32 file equal ours on the folder, and llama.cpp's within 1e-4; greedy
// text is llama.cpp's on both files; an adapter trained on the GGUF file (the loss falls) on every
// projection, exported `--to gguf` and loaded by llama.cpp, gives its per-record loss within 1e-4,
// and merged into the file gives llama.cpp the same text as ours.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <iomanip>
#include <iostream>

#include "llama_cpp_oracle.h"
#include "train_fixtures.h"
#include "trainer/gguf_model.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/gguf_file.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

struct FamilyCase {
  std::string name;
  std::vector<std::string> args;  // to scripts/make_random_model.py
  json config;                    // merged into its config.json
  std::string architecture;       // the GGUF file's
  // Largest log-probability difference to llama.cpp on the F32 file: 1e-4, but where llama.cpp's
  // CPU GELU (GeGLU) rounds its input to f16 and reads the result from an f16 table
  // (GGML_GELU_FP16 in ggml-cpu/vec.h): Gemma's log-probabilities then move by ~1e-3.
  double logprob_bound = 1e-4;
};

void run_ok(const std::vector<std::string>& argv) {
  const auto r = test::run_program(argv);
  ASSERT_EQ(r.exit_code, 0) << r.err;
}

void make_model(const fs::path& dir, const FamilyCase& c) {
  std::vector<std::string> argv = {
      test::torch_python(),
      std::string(LORA_SOURCE_DIR) + "/scripts/make_random_model.py",
      dir.string(),
      "--hidden",
      "64",
      "--heads",
      "4",
      "--kv-heads",
      "2",
      "--head-dim",
      "16",
      "--intermediate",
      "96",
      "--vocab",
      "512",
      "--tokenizer",
      (test::shared_dir() / test::kStoriesModel / "tokenizer.json").string()};
  argv.insert(argv.end(), c.args.begin(), c.args.end());
  run_ok(argv);
  json config = json::parse(test::read_file(dir / "config.json"));
  config.merge_patch(c.config);
  test::write_file(dir / "config.json", config.dump());
}

// log-softmax of each row of [positions, vocab] logits.
std::vector<double> log_probs(const Tensor& logits, int64_t vocab) {
  std::vector<double> out(logits.data.size());
  for (std::size_t t = 0; t < logits.data.size() / std::size_t(vocab); ++t) {
    const float* row = logits.data.data() + t * vocab;
    const double lse = test::log_sum_exp(row, vocab);
    for (int64_t v = 0; v < vocab; ++v) out[t * vocab + v] = double(row[v]) - lse;
  }
  return out;
}

double max_difference(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (std::size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

// Mean negative log-likelihood of ids[1:] from per-position log-probabilities.
double mean_nll_ours(const std::vector<double>& lp, int64_t vocab,
                     const std::vector<int32_t>& ids) {
  double sum = 0;
  for (std::size_t t = 0; t + 1 < ids.size(); ++t) sum -= lp[t * vocab + std::size_t(ids[t + 1])];
  return sum / double(ids.size() - 1);
}

const std::vector<int32_t> kIds = {1, 403, 261, 350, 85, 26, 417, 279, 62, 310, 499, 407, 378, 2};
const json kPrompt = {1, 403, 407, 261, 378};  // <s> "Once upon a time"

json greedy_ours(const fs::path& model, const fs::path& adapter = {}) {
  std::vector<std::string> args = {"--json",   "generate",         "--model",      model.string(),
                                   "--prompt", "Once upon a time", "--max-tokens", "16"};
  if (!adapter.empty()) args.insert(args.end(), {"--adapter-path", adapter.string()});
  const auto r = test::run_lora(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? json::parse(r.out)["tokens"] : json();
}

void train_adapter(const fs::path& model, const fs::path& data, const fs::path& adapter) {
  const auto r = test::run_lora({"--threads",
                                 "1",
                                 "train",
                                 "--model",
                                 model.string(),
                                 "--data",
                                 data.string(),
                                 "--adapter-path",
                                 adapter.string(),
                                 "--iters",
                                 "16",
                                 "--batch-size",
                                 "4",
                                 "--max-seq-length",
                                 "48",
                                 "--learning-rate",
                                 "4e-2",
                                 "--num-layers",
                                 "-1",
                                 "--lora-keys",
                                 "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                 "--steps-per-report",
                                 "4",
                                 "--steps-per-eval",
                                 "0",
                                 "--save-every",
                                 "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto losses = test::logged_losses(adapter / "metrics.jsonl", "train");
  ASSERT_EQ(losses.size(), 4u);
  EXPECT_LT(losses.back(), 0.97 * losses.front()) << "training on the GGUF file lowers the loss";
  std::cout << "train loss " << losses.front() << " -> " << losses.back() << "\n";
}

// llama.cpp's greedy tokens up to its first end-of-sequence (ours stop there).
json until_eos(const json& tokens) {
  json out = json::array();
  for (const auto& t : tokens) {
    if (t == 2) break;
    out.push_back(t);
  }
  return out;
}

// Our greedy text on `model` against llama.cpp's, up to its first end-of-sequence.
void expect_same_text(const fs::path& model, const json& mine, const json& theirs_all) {
  test::expect_same_text_or_near_tie(model, kPrompt, mine, until_eos(theirs_all));
}

class GgufFamily : public ::testing::TestWithParam<FamilyCase> {};

TEST_P(GgufFamily, ReadWrittenAndRunAsLlamaCppDoes) {
  const FamilyCase& c = GetParam();
  LORA_REQUIRE_TORCH();
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  LORA_REQUIRE_LLAMA_CPP();
  test::TempDir tmp("gguf-family");
  const fs::path hf = tmp / "hf", f32 = tmp / "f32.gguf", q8 = tmp / "q8_0.gguf";
  make_model(hf, c);
  for (const auto& [out, type] : {std::pair{f32, "f32"}, std::pair{q8, "q8_0"}}) {
    const auto r = test::run_lora(
        {"convert", "--model", hf.string(), "--out", out.string(), "--q-type", type});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  const GgufFile written = GgufFile::open(f32);
  EXPECT_EQ(written.get_string("general.architecture"), c.architecture);
  const Model folder = load_model(hf), file = load_model(f32);
  // The converter's layouts: Gemma's norms stored as 1 + weight (the folder's, shifted at load),
  // Phi-3's fused tensors and LongRoPE factors.
  if (folder.config.sandwich_norms) {
    EXPECT_EQ(written.read_f32("blk.1.post_ffw_norm.weight"), folder.layers[1].post_ffn_norm);
    EXPECT_EQ(written.read_f32("blk.1.ffn_norm.weight"), folder.layers[1].pre_ffn_norm);
    EXPECT_EQ(written.read_f32("output_norm.weight"), folder.final_norm);
  }
  if (c.architecture == "phi3") {
    EXPECT_EQ(written.tensor("blk.0.attn_qkv.weight").shape(), (std::vector<int64_t>{128, 64}));
    EXPECT_EQ(written.tensor("blk.0.ffn_up.weight").shape(), (std::vector<int64_t>{192, 64}));
    EXPECT_FALSE(written.contains_tensor("blk.0.attn_q.weight"));
    EXPECT_EQ(written.read_f32("rope_factors_short.weight"),
              folder.config.rope_scaling->short_factor);
    EXPECT_EQ(written.int_or("phi3.rope.dimension_count"), 12);
  }

  // Ours on the file equals ours on the folder.
  const int64_t vocab = folder.config.vocab_size, n = int64_t(kIds.size());
  ASSERT_EQ(file.config.vocab_size, vocab);
  const auto lp_folder = log_probs(forward_logits(folder, {}, kIds, 1, n), vocab);
  const auto lp_file = log_probs(forward_logits(file, {}, kIds, 1, n), vocab);
  EXPECT_LT(max_difference(lp_folder, lp_file), 1e-5);

  // The adapter, trained on the file.
  test::make_story_data(tmp / "data");
  const fs::path adapter = tmp / "adapter", lora_file = tmp / "adapter.gguf",
                 merged = tmp / "merged.gguf";
  train_adapter(f32, tmp / "data", adapter);
  auto r = test::run_lora({"export", "--adapter-path", adapter.string(), "--to", "gguf", "--out",
                           lora_file.string(), "--model", f32.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  r = test::run_lora({"merge", "--model", f32.string(), "--adapter-path", adapter.string(), "--out",
                      merged.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  LoraAdapter on_file = load_adapter(adapter, file), on_folder = load_adapter(adapter, folder);
  AdapterStack file_stack, folder_stack;
  file_stack.adapters = {&on_file};
  folder_stack.adapters = {&on_folder};
  const auto lp_adapted = log_probs(forward_logits(file, file_stack, kIds, 1, n), vocab);
  // The adapter is in Hugging Face layout: on the folder it gives the same numbers.
  EXPECT_LT(max_difference(lp_adapted,
                           log_probs(forward_logits(folder, folder_stack, kIds, 1, n), vocab)),
            1e-5);

  const json ids(kIds);
  const json refs = test::llama_cpp_jobs(
      json::array({json{{"model", f32.string()}, {"tokens", ids}, {"logprobs", true}},
                   json{{"model", f32.string()},
                        {"lora", lora_file.string()},
                        {"tokens", ids},
                        {"logprobs", true}},
                   json{{"model", f32.string()}, {"tokens", kPrompt}, {"greedy", 16}},
                   json{{"model", q8.string()}, {"tokens", kPrompt}, {"greedy", 16}},
                   json{{"model", merged.string()}, {"tokens", kPrompt}, {"greedy", 16}}}));
  ASSERT_EQ(refs.size(), 5u);
  const auto plain =
      test::compare_logprobs(forward_logits(file, {}, kIds, 1, n).data, vocab, refs[0]["logprobs"]);
  EXPECT_LT(plain.worst, c.logprob_bound) << "position " << plain.worst_position;
  std::vector<double> theirs;
  for (const auto& row : refs[1]["logprobs"])
    for (const auto& v : row) theirs.push_back(v.get<double>());
  const double loss = mean_nll_ours(lp_adapted, vocab, kIds),
               their_loss = mean_nll_ours(theirs, vocab, kIds);
  EXPECT_NEAR(loss, their_loss, 1e-4);
  EXPECT_GT(std::abs(loss - mean_nll_ours(lp_file, vocab, kIds)), 1e-3)
      << "the adapter must change the loss for the comparison to mean anything";
  std::cout << std::setprecision(8) << c.name << ": log-prob difference to llama.cpp "
            << plain.worst << " (mean " << plain.mean << "), adapted loss " << loss
            << " vs llama.cpp's " << their_loss << "\n";

  // On F32 files the texts are identical.
  EXPECT_EQ(greedy_ours(f32), until_eos(refs[2]["tokens"]));
  const json adapted = greedy_ours(f32, adapter);
  EXPECT_EQ(adapted, until_eos(refs[4]["tokens"]));
  EXPECT_EQ(greedy_ours(merged), adapted);
  expect_same_text(q8, greedy_ours(q8), refs[3]["tokens"]);
}

// What llama.cpp's runtime leaves out but the file keeps: Phi-3's and Mistral's sliding windows
// (llama.cpp runs full attention there; we honour the window, as the folder does), and Gemma 3
// in the vision checkpoint's layout (language_model.* tensors, text_config) with llama.cpp's
// default sliding-window period of 6 (no pattern key written). Ours on the file equals ours on
// the folder with windows shorter than the text.
TEST(GgufFamilies, WindowsAndLayoutsReadBackAsTheFolder) {
  LORA_REQUIRE_TORCH();
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  test::TempDir tmp("gguf-family-windows");
  const std::vector<FamilyCase> cases = {
      {"phi3",
       {"--arch", "phi3", "--sliding-window", "3", "--layers", "2"},
       json::object(),
       "phi3"},
      {"mistral",
       {"--arch", "mistral", "--sliding-window", "3", "--layers", "2"},
       json::object(),
       "llama"},
      {"gemma3-vision",
       {"--arch", "gemma3", "--tied", "--sliding-window", "3", "--layer-types", "sssssf",
        "--layers", "6"},
       {{"text_config", {{"query_pre_attn_scalar", 16}}}},
       "gemma3"}};
  for (const FamilyCase& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path hf = tmp / c.name, file = tmp / (c.name + ".gguf");
    make_model(hf, c);
    const auto r = test::run_lora(
        {"convert", "--model", hf.string(), "--out", file.string(), "--q-type", "f32"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const GgufFile f = GgufFile::open(file);
    EXPECT_EQ(f.get_string("general.architecture"), c.architecture);
    EXPECT_EQ(f.int_or(c.architecture + ".attention.sliding_window"), 3);
    EXPECT_FALSE(f.find(c.architecture + ".attention.sliding_window_pattern"));
    const Model folder = load_model(hf), gguf = load_model(file);
    EXPECT_EQ(gguf.config.sliding_layers, folder.config.sliding_layers);
    const int64_t vocab = folder.config.vocab_size, n = int64_t(kIds.size());
    EXPECT_LT(max_difference(log_probs(forward_logits(folder, {}, kIds, 1, n), vocab),
                             log_probs(forward_logits(gguf, {}, kIds, 1, n), vocab)),
              1e-5);
    // The window matters at this length: without it the numbers move.
    Model unwindowed = load_model(file);
    unwindowed.config.sliding_window = 0;
    EXPECT_GT(max_difference(log_probs(forward_logits(folder, {}, kIds, 1, n), vocab),
                             log_probs(forward_logits(unwindowed, {}, kIds, 1, n), vocab)),
              1e-3);
  }
}

// A model file's metadata as llama.cpp's converter writes it for `arch`, plus `more` keys.
ModelConfig config_of(const fs::path& path, const std::string& arch, int64_t layers,
                      const std::function<void(GgufWriter&)>& more = {}) {
  GgufWriter w;
  w.set_string("general.architecture", arch);
  for (const auto& [key, value] :
       std::vector<std::pair<std::string, int64_t>>{{"block_count", layers},
                                                    {"context_length", 4096},
                                                    {"embedding_length", 64},
                                                    {"feed_forward_length", 96},
                                                    {"attention.head_count", 4},
                                                    {"attention.head_count_kv", 2}})
    w.set_u32(arch + "." + key, uint32_t(value));
  if (arch != "phi3") w.set_u32(arch + ".attention.key_length", 32);
  w.set_f32(arch + ".attention.layer_norm_rms_epsilon", 1e-6f);
  w.set_strings("tokenizer.ggml.tokens", std::vector<std::string>(40, "x"));
  if (more) more(w);
  w.write(path);
  return gguf_model_config(GgufFile::open(path));
}

// Where the converter writes no key, the runtime's defaults: Gemma 2's window of 4096 on even
// layers and soft-caps of 50 and 30, Gemma 3's period of 6 and local base of 10000, the 27B
// shape's query scale, Phi-3's rotary width and LongRoPE from its tensors, SmolLM3's fixed
// no-RoPE layers.
TEST(GgufFamilies, LlamaCppDefaultsWhereKeysAreAbsent) {
  test::TempDir tmp("gguf-family-defaults");
  const ModelConfig g2 = config_of(tmp / "g2.gguf", "gemma2", 4);
  EXPECT_EQ(g2.model_type, "gemma2");
  EXPECT_EQ(g2.sliding_window, 4096);
  EXPECT_EQ(g2.sliding_layers, (std::vector<uint8_t>{1, 0, 1, 0}));
  EXPECT_EQ(g2.attn_logit_softcap, 50.0f);
  EXPECT_EQ(g2.final_logit_softcap, 30.0f);
  EXPECT_EQ(g2.query_pre_attn_scalar, 32.0f);
  EXPECT_TRUE(g2.tie_word_embeddings && g2.sandwich_norms && g2.norm_plus_one);
  EXPECT_EQ(g2.hidden_act, Activation::gelu_tanh);

  const ModelConfig g3 = config_of(tmp / "g3.gguf", "gemma3", 8, [](GgufWriter& w) {
    w.set_u32("gemma3.attention.sliding_window", 5);
  });
  EXPECT_EQ(g3.model_type, "gemma3_text");
  EXPECT_EQ(g3.sliding_layers, (std::vector<uint8_t>{1, 1, 1, 1, 1, 0, 1, 1}));
  EXPECT_EQ(g3.rope_local_theta, 10000.0f);
  EXPECT_EQ(g3.final_logit_softcap, 0.0f);
  EXPECT_TRUE(g3.qk_norm);
  EXPECT_EQ(config_of(tmp / "g3-none.gguf", "gemma3", 2).sliding_window, 0);
  EXPECT_EQ(config_of(tmp / "g3-27b.gguf", "gemma3", 62).query_pre_attn_scalar, 16.0f);

  const ModelConfig phi = config_of(tmp / "phi3.gguf", "phi3", 2, [](GgufWriter& w) {
    w.set_u32("phi3.rope.dimension_count", 12);
    w.set_u32("phi3.rope.scaling.original_context_length", 512);
    w.set_f32("phi3.rope.scaling.attn_factor", 1.25f);
    const std::vector<float> short_f(6, 1.5f), long_f(6, 4.0f);
    auto bytes = [](const std::vector<float>& v) {
      std::vector<std::byte> b(v.size() * sizeof(float));
      std::memcpy(b.data(), v.data(), b.size());
      return b;
    };
    w.add_tensor("rope_factors_long.weight", GgmlType::F32, {6}, bytes(long_f));
    w.add_tensor("rope_factors_short.weight", GgmlType::F32, {6}, bytes(short_f));
  });
  EXPECT_EQ(phi.head_dim, 16);
  EXPECT_EQ(phi.rotary_dim, 12);
  EXPECT_TRUE(phi.fused_projections);
  ASSERT_TRUE(phi.rope_scaling && phi.rope_scaling->longrope);
  EXPECT_EQ(phi.rope_scaling->attention_factor, 1.25f);
  EXPECT_EQ(phi.rope_scaling->original_max_position_embeddings, 512);
  EXPECT_EQ(phi.rope_scaling->long_factor, std::vector<float>(6, 4.0f));
  EXPECT_EQ(phi.sliding_window, 0);

  const ModelConfig smol = config_of(tmp / "smol.gguf", "smollm3", 8);
  EXPECT_EQ(smol.rope_layers, (std::vector<uint8_t>{1, 1, 1, 0, 1, 1, 1, 0}));
  EXPECT_TRUE(gguf_permutes_qk("smollm3") && !gguf_permutes_qk("phi3"));

  try {
    config_of(tmp / "x.gguf", "gpt9", 2);
    ADD_FAILURE() << "an unknown architecture is refused";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("architecture 'gpt9' is not supported (llama, qwen2, "
                                         "qwen3, gemma2, gemma3, phi3, smollm3 are)"),
              std::string::npos)
        << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(
    Families, GgufFamily,
    ::testing::Values(
        // Sliding window 3 on layers 0 and 2 (period 2, written as a key), 4 layers.
        FamilyCase{"gemma3",
                   {"--arch", "gemma3_text", "--tied", "--sliding-window", "3", "--layers", "4"},
                   {{"query_pre_attn_scalar", 16}},
                   "gemma3",
                   5e-3},
        FamilyCase{"gemma2",
                   {"--arch", "gemma2", "--tied", "--sliding-window", "3", "--layers", "2",
                    "--softcap", "5", "10"},
                   {{"query_pre_attn_scalar", 16}},
                   "gemma2",
                   5e-3},
        // RoPE on 12 of 16 features; LongRoPE with an original length of llama.cpp's context
        // (short factors on both sides) and an attention factor above 1.
        FamilyCase{
            "phi3",
            {"--arch", "phi3", "--partial-rotary", "0.75", "--longrope", "512", "--layers", "2"},
            {{"max_position_embeddings", 4096}},
            "phi3"},
        FamilyCase{"smollm3",
                   {"--arch", "smollm3", "--layers", "4"},
                   {{"no_rope_layers", {1, 1, 1, 0}}},
                   "smollm3"},
        // llama.cpp's llama runtime has no window: one longer than the text.
        FamilyCase{"mistral",
                   {"--arch", "mistral", "--sliding-window", "64", "--layers", "2"},
                   json::object(),
                   "llama"}),
    [](const auto& info) { return info.param.name; });

}  // namespace
}  // namespace lora
