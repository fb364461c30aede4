// The check a user can do through the CLI: one plain-SGD step of `lora train` (momentum 0, no
// weight decay, dropout 0, the whole train set as one batch) from a given adapter A0 must give
// A1 = A0 - LR * grad, where grad is torch autograd's gradient of the same batch's loss
// (scripts/torch_lora_grad.py). The batch's token ids, targets and loss weights are the ones our
// own data pipeline produces (tokenizer, record encoder, padded batch).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "data/batch.h"
#include "data/dataset_encode.h"
#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/evaluate.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/safetensors.h"
#include "trainer/model.h"

namespace lora {
namespace {

constexpr double kGradTol = 1e-4;  // max |g - g_torch| / max |g_torch| per tensor
// A power of two, so LR * grad is exact in float and only the subtraction from A0 rounds; large
// enough that this rounding (an ulp of A0, ~1e-8) is far below 1e-4 of LR * max|grad|.
constexpr float kLearningRate = 0.5f;
constexpr int kRank = 4;
constexpr float kScale = 2.0f;

TensorData i32_tensor(std::string name, std::vector<int64_t> shape, std::span<const int32_t> v) {
  TensorData t{std::move(name), DType::I32, std::move(shape), {}};
  t.bytes.resize(v.size_bytes());
  std::memcpy(t.bytes.data(), v.data(), v.size_bytes());
  return t;
}

std::string key_of(const LoraModule& m) {
  return std::to_string(m.layer) + "." + std::string(proj_name(m.proj));
}

// max |got - want| / max |want|, with want's scale for the caller's "is it zero" check.
std::pair<double, double> rel_error(std::span<const double> got, std::span<const float> want) {
  double err = 0, scale = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    err = std::max(err, std::abs(got[i] - double(want[i])));
    scale = std::max(scale, std::abs(double(want[i])));
  }
  return {scale > 0 ? err / scale : INFINITY, scale};
}

// `lora train` for one plain-SGD step from the adapter in tmp/a0 over tmp/data, into tmp/out.
std::vector<std::string> sgd_step_args(const std::filesystem::path& model_dir,
                                       const std::filesystem::path& tmp, std::size_t batch_size,
                                       const std::string& lr_text) {
  return {"--threads",
          "1",
          "train",
          "--model",
          model_dir.string(),
          "--data",
          (tmp / "data").string(),
          "--adapter-path",
          (tmp / "out").string(),
          "--optimizer",
          "sgd",
          "--momentum",
          "0",
          "--weight-decay",
          "0",
          "--learning-rate",
          lr_text,
          "--iters",
          "1",
          "--batch-size",
          std::to_string(batch_size),
          "--resume-adapter-file",
          (tmp / "a0").string(),
          "--rank",
          std::to_string(kRank),
          "--scale",
          "2",
          "--num-layers",
          "-1",
          "--dropout",
          "0",
          "--lora-keys",
          "q_proj",
          "k_proj",
          "v_proj",
          "o_proj",
          "gate_proj",
          "up_proj",
          "down_proj",
          "--val-batches",
          "0",
          "--save-every",
          "0",
          "--grad-clip",
          "0",
          "--lr-schedule",
          "constant"};
}

TEST(TrainSgdStep, OneCliStepIsA0MinusLrTimesTorchGradient) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  LORA_REQUIRE_TORCH();
  const auto model_dir = test::shared_dir() / test::kStoriesModel;
  test::TempDir tmp("sgd_step");

  // A tiny text data folder; --batch-size covers it, so the one step sees every example. The
  // sentences differ in length, so the batch is padded (right padding: causal attention never
  // lets a real position see a pad, and pads carry weight 0, so torch needs no key mask).
  const auto sentences = test::story_sentences();
  ASSERT_GE(sentences.size(), 4u);
  std::filesystem::create_directories(tmp / "data");
  std::vector<nlohmann::json> rows;
  for (std::size_t i = 0; i < 4; ++i) rows.push_back({{"text", sentences[i]}});
  test::write_jsonl(tmp / "data/train.jsonl", rows);

  // A0: non-zero A and B on all seven projections of every layer.
  const Model model = load_model(model_dir);
  LoraConfig lc;
  lc.rank = kRank;
  lc.scale = kScale;
  lc.keys = {Proj::q, Proj::k, Proj::v, Proj::o, Proj::gate, Proj::up, Proj::down};
  LoraAdapter a0 = LoraAdapter::create(model, lc, 7);
  uint64_t state = 4242;
  for (LoraModule& m : a0.modules)
    for (float& b : m.B.value.data) {
      state = state * 6364136223846793005ULL + 1442695040888963407ULL;
      b = float(int64_t(state >> 40) % 2001 - 1000) * 2e-5f;
    }
  ASSERT_EQ(a0.modules.size(), 7u * std::size_t(model.config.num_layers));
  save_adapter(tmp / "a0", a0, model, AdapterFormat::mlx);

  // The batch our pipeline makes of that file (same encoder settings as the run below).
  const auto tokenizer = data::Tokenizer::load(model_dir);
  const auto tok_config = data::TokenizerConfig::load(model_dir);
  const data::RecordEncoder encoder(tokenizer, tok_config, data::EncodeOptions{});
  const data::EncodedSet set = load_split(tmp / "data/train.jsonl", encoder, 64ull << 20);
  ASSERT_EQ(set.examples.size(), rows.size());
  std::vector<const data::Example*> members;
  for (const auto& ex : set.examples) members.push_back(&ex);
  const data::Batch batch = data::make_batch(members);
  ASSERT_GT(batch.trained_tokens, 0);
  EXPECT_LT(batch.trained_tokens, batch.batch * batch.seq) << "expected a padded batch";

  // torch's loss and gradients for that batch at A0.
  std::vector<TensorData> tensors = {
      i32_tensor("ids", {batch.batch, batch.seq}, batch.inputs),
      i32_tensor("targets", {batch.batch, batch.seq}, batch.targets),
      TensorData::from_f32("weights", {batch.batch, batch.seq}, batch.weights)};
  for (const LoraModule& m : a0.modules) {
    tensors.push_back(
        TensorData::from_f32("lora." + key_of(m) + ".A", m.A.value.shape, m.A.value.data));
    tensors.push_back(
        TensorData::from_f32("lora." + key_of(m) + ".B", m.B.value.shape, m.B.value.data));
  }
  char scale_text[64];
  std::snprintf(scale_text, sizeof scale_text, "%.9g", double(a0.modules.at(0).scale));
  write_safetensors(tmp / "torch_in.safetensors", tensors, {{"scale", scale_text}});
  const auto torch_run = test::run_program(
      {test::torch_python(), std::string(LORA_SOURCE_DIR) + "/scripts/torch_lora_grad.py", "--case",
       model_dir.string(), (tmp / "torch_in.safetensors").string(),
       (tmp / "torch_out.safetensors").string()});
  ASSERT_EQ(torch_run.exit_code, 0) << torch_run.err;
  const auto torch = SafetensorsFile::open(tmp / "torch_out.safetensors");

  // One SGD step through the CLI. momentum and weight decay are spelled out: sgd applies neither
  // by default (optimizer.h), and 0 here keeps the check independent of those defaults.
  char lr_text[32];
  std::snprintf(lr_text, sizeof lr_text, "%.9g", double(kLearningRate));
  const auto r = test::run_lora(sgd_step_args(model_dir, tmp.path(), rows.size(), lr_text));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const LoraAdapter a1 = load_adapter(tmp / "out", model);
  ASSERT_EQ(a1.modules.size(), a0.modules.size());

  double worst = 0;
  for (const LoraModule& m0 : a0.modules) {
    const LoraModule* m1 = a1.find(m0.layer, m0.proj);
    ASSERT_NE(m1, nullptr) << key_of(m0);
    for (const bool is_a : {true, false}) {
      const std::string name = key_of(m0) + (is_a ? ".A" : ".B");
      const auto& v0 = is_a ? m0.A.value.data : m0.B.value.data;
      const auto& v1 = is_a ? m1->A.value.data : m1->B.value.data;
      const std::vector<float> want = torch.read_f32("grad." + name);
      ASSERT_EQ(v0.size(), want.size()) << name;
      ASSERT_EQ(v1.size(), want.size()) << name;
      std::vector<double> got(want.size());
      for (std::size_t i = 0; i < want.size(); ++i)
        got[i] = (double(v0[i]) - double(v1[i])) / double(kLearningRate);
      const auto [err, scale] = rel_error(got, want);
      EXPECT_GT(scale, 1e-4) << name << ": torch's gradient is (nearly) zero";
      EXPECT_LT(err, kGradTol) << name;
      worst = std::max(worst, err);
    }
  }
  std::printf(
      "sgd step over %lld examples (%lld trained tokens): torch loss %.6f, worst "
      "(A0 - A1)/LR vs torch grad rel. error %.2e over %zu tensors\n",
      static_cast<long long>(batch.batch), static_cast<long long>(batch.trained_tokens),
      double(torch.read_f32("loss").at(0)), worst, 2 * a0.modules.size());
}

}  // namespace
}  // namespace lora
