// Full fine-tuning (--fine-tune-type full) end to end on stories260K: a fresh copy of the blocks is
// the base; the whole-model gradient of a trained block matches finite differences; training lowers
// the loss faster than LoRA at the same steps and learning rate; the folder is laid out as mlx-lm
// writes it; resume is bit-identical; the merged folder generates the same text as the folder
// used as --adapter-path; quantized bases are refused; the memory estimate prints and refuses.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "tests/adapter_test_util.h"
#include "tests/support/test_support.h"
#include "tests/train_fixtures.h"
#include "trainer/batch_loss.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/full_adapter.h"
#include "trainer/io/safetensors.h"
#include "trainer/random_model.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::TempDir;

LoraAdapter full_adapter(const Model& model, int num_layers) {
  LoraConfig config;
  config.full = true;
  config.num_layers = num_layers;
  return LoraAdapter::create(model, config, 0);
}

// The settings both runs of the comparison share: 30 steps of Adam at 1e-3 over the 5 blocks,
// batch 4, no validation, the training loss logged every 5 steps.
std::vector<std::string> train_args(const fs::path& data, const fs::path& out,
                                    const std::string& type, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {
      "--fine-tune-type",   type, "--iters",      "30", "--learning-rate", "1e-3",
      "--num-layers",       "5",  "--batch-size", "4",  "--val-batches",   "0",
      "--steps-per-report", "5",  "--seed",       "3",  "--save-every",    "0"};
  args.insert(args.end(), more.begin(), more.end());
  return test::stories_train_args(data, out, args);
}

double mean_of_last(const std::vector<double>& v, std::size_t n) {
  double s = 0;
  for (std::size_t i = v.size() - n; i < v.size(); ++i) s += v[i];
  return s / double(n);
}

TEST(FullFineTune, FreshBlocksAreTheBaseAndNormsAndBiasesAreTrained) {
  LORA_REQUIRE_SHARED(test::kStories);
  const Model model = load_model(test::stories_dir());
  LoraAdapter a = full_adapter(model, 2);
  ASSERT_EQ(a.blocks.size(), 2u);
  EXPECT_EQ(a.blocks.front().layer, 3);
  // Seven linears and two norms per Llama block.
  EXPECT_EQ(a.parameters().size(), 2u * 9u);
  EXPECT_TRUE(
      test::same_bits(test::prompt_logits(model, {&a}, 1), test::prompt_logits(model, {}, 1)));
  a.enabled = false;
  EXPECT_TRUE(
      test::same_bits(test::prompt_logits(model, {&a}, 1), test::prompt_logits(model, {}, 1)));
}

// d(loss)/d(weight) through the whole model for a few entries of a trained linear and norm, against
// central differences of the loss (f32 forward, so a loose tolerance on a tiny model).
TEST(FullFineTune, WholeModelGradientMatchesFiniteDifferences) {
  LORA_REQUIRE_SHARED(test::kStories);
  const Model model = load_model(test::stories_dir());
  LoraAdapter a = full_adapter(model, 1);
  const std::vector<int32_t>& ids = test::kPromptIds;
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<int32_t> targets(ids.begin() + 1, ids.end());
  targets.push_back(2);
  const std::vector<float> weights(ids.size(), 1.0f);
  auto loss = [&](bool train, bool checkpointing = false) {
    AdapterStack stack;
    stack.adapters = {&a};
    stack.training = train;
    ag::Tape tape(train);
    ForwardOptions opts;
    opts.grad_checkpoint = checkpointing;
    ag::Var h = forward_hidden(tape, model, stack, ids, 1, n, {}, opts);
    ag::Var l = ag::cross_entropy_head(tape, h, model.head(), targets, weights, float(n));
    if (train) tape.backward(l);
    return double(l->value.data[0]);
  };
  // Gradient checkpointing replays the block and gives the same weight gradients.
  loss(true, /*checkpointing=*/true);
  std::vector<std::vector<float>> replayed;
  for (ag::Parameter* p : a.parameters()) {
    replayed.push_back(p->grad.data);
    p->zero_grad();
  }
  loss(true);
  const auto params = a.parameters();
  for (std::size_t i = 0; i < params.size(); ++i) EXPECT_EQ(params[i]->grad.data, replayed[i]);
  TrainedBlock& b = a.blocks.front();
  for (BlockTensor t : {BlockTensor::q, BlockTensor::down, BlockTensor::input_norm}) {
    ag::Parameter& p = b.at(t);
    for (std::size_t i : {std::size_t(0), p.value.data.size() / 2, p.value.data.size() - 1}) {
      const float keep = p.value.data[i];
      const float h = 1e-2f;
      p.value.data[i] = keep + h;
      const double up = loss(false);
      p.value.data[i] = keep - h;
      const double down = loss(false);
      p.value.data[i] = keep;
      const double numeric = (up - down) / (2.0 * double(h));
      EXPECT_NEAR(p.grad.data[i], numeric, 2e-3 + 2e-2 * std::fabs(numeric))
          << block_tensor_name(t) << "[" << i << "]";
    }
  }
}

// Every kind of block tensor a family has round-trips through the files: qwen2's biases, Gemma's
// (1 + w) norms (written as w, the checkpoint's convention), q/k and sandwich norms.
TEST(FullFineTune, FilesKeepBiasesAndGemmaNorms) {
  ModelConfig c;
  c.model_type = "gemma3_text";
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 3;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 32;
  c.attention_bias = true;
  c.qk_norm = true;
  c.norm_plus_one = true;
  c.sandwich_norms = true;
  c.raw = {{"model_type", "gemma3_text"}};
  const Model model = make_random_model(c, 4);
  LoraAdapter a = full_adapter(model, 2);
  ASSERT_EQ(a.parameters().size(), 2u * kNumBlockTensors);
  for (ag::Parameter* p : a.parameters())
    for (std::size_t i = 0; i < p->value.data.size(); ++i)
      p->value.data[i] += 0.01f * float(int(i % 5) - 2);
  TempDir tmp("full");
  save_full_adapter(tmp / "a", a, model, json::object());
  const SafetensorsFile file = SafetensorsFile::open(tmp / "a" / "adapters.safetensors");
  EXPECT_TRUE(file.contains("model.layers.1.self_attn.k_proj.bias"));
  const auto stored = file.read_f32("model.layers.2.pre_feedforward_layernorm.weight");
  const auto& held = a.blocks.back().at(BlockTensor::pre_ffn_norm).value.data;
  EXPECT_NEAR(stored[0], held[0] - 1.0f, 1e-6f);
  LoraAdapter back = load_adapter(tmp / "a", model);
  ASSERT_TRUE(back.config.full);
  const auto want = a.parameters();
  const auto got = back.parameters();
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    for (std::size_t j = 0; j < got[i]->value.data.size(); ++j)
      EXPECT_NEAR(got[i]->value.data[j], want[i]->value.data[j], 1e-6f);
  const std::vector<int32_t> ids = {1, 5, 9, 3, 7, 2};
  AdapterStack sa, sb;
  sa.adapters = {&a};
  sb.adapters = {&back};
  EXPECT_LT(test::max_abs_diff(forward_logits(model, sa, ids, 1, 6),
                               forward_logits(model, sb, ids, 1, 6)),
            1e-5f);
}

TEST(FullFineTune, LowersTheLossFasterThanLoraAndSavesAsMlxLm) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  TempDir tmp("full");
  test::make_story_data(tmp / "data");
  const auto full = test::run_lora(train_args(tmp / "data", tmp / "full", "full"));
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const auto lora = test::run_lora(train_args(tmp / "data", tmp / "lora", "lora",
                                              {"--lora-keys",
                                               "q_proj,k_proj,v_proj,o_proj,"
                                               "gate_proj,up_proj,down_proj"}));
  ASSERT_EQ(lora.exit_code, 0) << lora.err;
  const auto full_losses = test::logged_losses(tmp / "full" / "metrics.jsonl", "train");
  const auto lora_losses = test::logged_losses(tmp / "lora" / "metrics.jsonl", "train");
  ASSERT_EQ(full_losses.size(), 6u);
  ASSERT_EQ(lora_losses.size(), 6u);
  std::printf("train loss at steps 5..30: full");
  for (double l : full_losses) std::printf(" %.3f", l);
  std::printf("; lora");
  for (double l : lora_losses) std::printf(" %.3f", l);
  std::printf("\n");
  EXPECT_LT(full_losses.back(), full_losses.front());
  EXPECT_LT(mean_of_last(full_losses, 2), mean_of_last(lora_losses, 2));

  // mlx-lm's layout: the trained tensors by their model names, fine_tune_type full.
  const json config = json::parse(test::read_file(tmp / "full" / "adapter_config.json"));
  EXPECT_EQ(config["fine_tune_type"], "full");
  EXPECT_EQ(config["num_layers"], 5);
  EXPECT_TRUE(config["lora_parameters"].is_null());
  const SafetensorsFile file = SafetensorsFile::open(tmp / "full" / "adapters.safetensors");
  EXPECT_EQ(file.tensors().size(), 5u * 9u);
  EXPECT_TRUE(file.contains("model.layers.0.self_attn.q_proj.weight"));
  EXPECT_TRUE(file.contains("model.layers.4.post_attention_layernorm.weight"));
  EXPECT_EQ(file.info("model.layers.2.mlp.down_proj.weight").shape,
            (std::vector<int64_t>{64, 172}));
  // Not a LoRA adapter: export refuses it with the reason.
  EXPECT_NE(test::adapter_read_error(tmp / "full").find("fully fine-tuned"), std::string::npos);
}

TEST(FullFineTune, ResumeFromACheckpointIsBitIdentical) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  TempDir tmp("full");
  test::make_story_data(tmp / "data");
  const std::vector<std::string> more = {"--save-every", "10",  "--optimizer",   "adamw",
                                         "--grad-clip",  "1.0", "--lr-schedule", "cosine",
                                         "--warmup",     "3"};
  auto args = [&](const char* out) {
    auto a = train_args(tmp / "data", tmp / out, "full", more);
    a[std::find(a.begin(), a.end(), "--iters") - a.begin() + 1] = "20";
    return a;
  };
  const auto straight = test::run_lora(args("straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  ::setenv("LORA_FAULT_SIGNAL_AT_STEP", "15:9", 1);  // SIGKILL 5 steps after the step-10 checkpoint
  const auto killed = test::run_lora(args("resumed"));
  ::unsetenv("LORA_FAULT_SIGNAL_AT_STEP");
  ASSERT_NE(killed.exit_code, 0);
  const auto resumed =
      test::run_lora({"--threads", "1", "train", "--resume", (tmp / "resumed").string()});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err << resumed.out;
  EXPECT_EQ(test::read_file(tmp / "straight" / "adapters.safetensors"),
            test::read_file(tmp / "resumed" / "adapters.safetensors"));
  EXPECT_EQ(test::logged_losses(tmp / "straight" / "metrics.jsonl"),
            test::logged_losses(tmp / "resumed" / "metrics.jsonl"));
}

TEST(FullFineTune, MergedFolderGeneratesTheSameTextAsTheAdapterPath) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  TempDir tmp("full");
  test::make_story_data(tmp / "data");
  const auto trained = test::run_lora(train_args(tmp / "data", tmp / "full", "full"));
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const std::string model = test::stories_dir().string();
  const auto merged = test::run_lora({"merge", "--model", model, "--adapter-path",
                                      (tmp / "full").string(), "--out", (tmp / "merged").string()});
  ASSERT_EQ(merged.exit_code, 0) << merged.err;
  EXPECT_NE(merged.out.find("merged 45 linears"), std::string::npos) << merged.out;
  const std::vector<std::string> gen = {
      "--threads", "1", "generate", "--prompt", "Once upon a time", "--max-tokens", "40", "-q"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> a = gen;
    a.insert(a.end(), more.begin(), more.end());
    return test::run_lora(a);
  };
  const auto in_memory = with({"--model", model, "--adapter-path", (tmp / "full").string()});
  const auto from_merged = with({"--model", (tmp / "merged").string()});
  const auto base = with({"--model", model});
  ASSERT_EQ(in_memory.exit_code, 0) << in_memory.err;
  ASSERT_EQ(from_merged.exit_code, 0) << from_merged.err;
  std::printf("base:   %s\nfull:   %s\nmerged: %s\n", base.out.c_str(), in_memory.out.c_str(),
              from_merged.out.c_str());
  EXPECT_EQ(in_memory.out, from_merged.out);
  EXPECT_NE(in_memory.out, base.out);
  // eval reads the folder too, and gives the merged model's loss.
  const auto eval_a = test::run_lora({"--threads", "1", "eval", "--model", model, "--adapter-path",
                                      (tmp / "full").string(), "--data", (tmp / "data").string(),
                                      "--split", "valid"});
  const auto eval_m =
      test::run_lora({"--threads", "1", "eval", "--model", (tmp / "merged").string(), "--data",
                      (tmp / "data").string(), "--split", "valid", "--no-adapter"});
  ASSERT_EQ(eval_a.exit_code, 0) << eval_a.err;
  ASSERT_EQ(eval_m.exit_code, 0) << eval_m.err;
  // "valid loss L, perplexity P (N tokens ...": the same numbers.
  EXPECT_EQ(eval_a.out.substr(0, eval_a.out.find(" (")),
            eval_m.out.substr(0, eval_m.out.find(" (")));
}

TEST(FullFineTune, QuantizedBasesAreRefused) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  LORA_REQUIRE_SHARED("models/stories260K-gguf/stories260K-q8_0.gguf");
  TempDir tmp("full");
  test::make_story_data(tmp / "data");
  const auto q4 = test::run_lora({"convert", "--model", test::stories_dir().string(), "--quantize",
                                  "4", "--q-group-size", "32", "--out", (tmp / "q4").string()});
  ASSERT_EQ(q4.exit_code, 0) << q4.err;
  auto refused = [&](const fs::path& model, std::vector<std::string> more) {
    std::vector<std::string> a = test::model_train_args(
        model, tmp / "data", tmp / "out", {"--fine-tune-type", "full", "--iters", "2"});
    a.insert(a.end(), more.begin(), more.end());
    const auto r = test::run_lora(a);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_FALSE(fs::exists(tmp / "out"));
    return r.err;
  };
  const std::string mlx = refused(tmp / "q4", {});
  EXPECT_NE(mlx.find("4-bit MLX quantization"), std::string::npos) << mlx;
  EXPECT_NE(mlx.find("lora convert"), std::string::npos) << mlx;
  EXPECT_NE(mlx.find("--fine-tune-type lora"), std::string::npos) << mlx;
  const std::string at_load = refused(test::stories_dir(), {"--quantize", "4"});
  EXPECT_NE(at_load.find("--quantize"), std::string::npos) << at_load;
  const std::string gguf =
      refused(test::shared_dir() / "models/stories260K-gguf/stories260K-q8_0.gguf", {});
  EXPECT_NE(gguf.find("GGUF Q8_0"), std::string::npos) << gguf;
}

TEST(FullFineTune, MemoryEstimatePrintsAndRefusesWhatCannotFit) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  TempDir tmp("full");
  test::make_story_data(tmp / "data");
  const auto printed = test::run_lora(test::stories_train_args(
      tmp / "data", tmp / "out", {"--fine-tune-type", "full", "--print-config"}));
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  for (const char* part : {"trained values", "gradients", "optimizer moments", "activations"})
    EXPECT_NE(printed.err.find(part), std::string::npos) << part << ": " << printed.err;
  // About 11 MiB still to allocate (the five blocks' f32 values, gradients and Adam moments, the
  // activations and their transients); with 6.7 MiB available, one block fits.
  ::setenv("LORA_AVAILABLE_MEMORY", "7000000", 1);
  const auto r = test::run_lora(train_args(tmp / "data", tmp / "out", "full"));
  ::unsetenv("LORA_AVAILABLE_MEMORY");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("this run needs about"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--num-layers"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("num_layers"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

}  // namespace
}  // namespace lora
