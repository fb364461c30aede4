// DoRA adapters end to end on stories260K: a fresh DoRA adapter is the base (m = ||W||, B = 0);
// PEFT (use_dora, lora_magnitude_vector) and MLX-LM (fine_tune_type dora, `.m`) files hold the
// magnitudes, read back to the same logits and convert both ways; a merge into the float base
// gives the runtime path's logits within 1e-5, a merge into a 4-bit base reports the kept delta;
// stacking DoRA with another adapter is refused; `lora train --fine-tune-type dora` trains the
// magnitudes and lowers the loss.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "autograd/dora.h"
#include "tests/adapter_test_util.h"
#include "tests/support/test_support.h"
#include "tests/train_fixtures.h"
#include "trainer/io/adapter_io.h"
#include "trainer/io/safetensors.h"
#include "trainer/merge.h"
#include "trainer/model_convert.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test::max_abs_diff;
using test::same_bits;
using test::TempDir;

Tensor logits(const Model& model, std::vector<LoraAdapter*> adapters = {}) {
  return test::prompt_logits(model, std::move(adapters), 1);
}

// A DoRA adapter on every projection with B ~ N(0, 0.04) and magnitudes moved off ||W|| by up to
// 10%: what a trained one looks like.
LoraAdapter trained_dora(const Model& model) {
  LoraAdapter a = test::adapter_with_random_b(model, test::kAllProj, 4, 8.0f, 0.04f, 23);
  a.config.dora = true;
  for (auto& m : a.modules) {
    const FrozenWeight& w = model.layers[m.layer].at(m.proj);
    m.magnitude.value = Tensor({w.rows}, ag::weight_row_norms(w, {}));
    for (std::size_t i = 0; i < m.magnitude.value.data.size(); ++i)
      m.magnitude.value.data[i] *= 1.0f + 0.1f * float(int(i % 7) - 3) / 3.0f;
  }
  return a;
}

TEST(DoraAdapter, FreshAdapterIsTheBase) {
  LORA_REQUIRE_SHARED(test::kStories);
  const Model model = load_model(test::stories_dir());
  LoraConfig c;
  c.rank = 4;
  c.dora = true;
  c.keys = test::kAllProj;
  LoraAdapter a = LoraAdapter::create(model, c, 3);
  ASSERT_TRUE(a.modules.front().is_dora());
  EXPECT_EQ(a.parameters().size(), 3 * a.modules.size());  // A, B, m
  EXPECT_LT(max_abs_diff(logits(model, {&a}), logits(model)), 1e-5f);
}

TEST(DoraAdapter, PeftAndMlxFilesKeepTheMagnitudesBothWays) {
  LORA_REQUIRE_SHARED(test::kStories);
  TempDir tmp("dora");
  const Model model = load_model(test::stories_dir());
  LoraAdapter a = trained_dora(model);
  const Tensor want = logits(model, {&a});
  EXPECT_GT(max_abs_diff(want, logits(model)), 1e-3f);
  save_adapter(tmp / "peft", a, model, AdapterFormat::peft);
  save_adapter(tmp / "mlx", a, model, AdapterFormat::mlx);

  const json pc = json::parse(test::read_file(tmp / "peft" / "adapter_config.json"));
  EXPECT_EQ(pc["use_dora"], true);
  const auto pt = SafetensorsFile::open(tmp / "peft" / "adapter_model.safetensors");
  EXPECT_EQ(pt.info("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector").shape,
            (std::vector<int64_t>{64}));
  const json mc = json::parse(test::read_file(tmp / "mlx" / "adapter_config.json"));
  EXPECT_EQ(mc["fine_tune_type"], "dora");
  const auto mt = SafetensorsFile::open(tmp / "mlx" / "adapters.safetensors");
  EXPECT_EQ(mt.info("model.layers.0.mlp.down_proj.m").shape, (std::vector<int64_t>{64}));

  for (const char* dir : {"peft", "mlx"}) {
    LoraAdapter back = load_adapter(tmp / dir, model);
    EXPECT_TRUE(same_bits(logits(model, {&back}), want)) << dir;
  }
  // PEFT -> MLX-LM -> PEFT through export keeps DoRA and every tensor.
  AdapterFile::read(tmp / "peft").write(tmp / "mlx2", AdapterFormat::mlx);
  AdapterFile::read(tmp / "mlx2").write(tmp / "peft2", AdapterFormat::peft);
  EXPECT_EQ(test::read_file(tmp / "peft" / "adapter_model.safetensors"),
            test::read_file(tmp / "peft2" / "adapter_model.safetensors"));
  EXPECT_EQ(json::parse(test::read_file(tmp / "peft2" / "adapter_config.json"))["use_dora"], true);
  EXPECT_NE(test::read_file(tmp / "peft2" / "README.md").find("DoRA"), std::string::npos);

  // A DoRA config without magnitudes (or the reverse) is refused.
  json broken = pc;
  broken["use_dora"] = false;
  test::write_file(tmp / "peft" / "adapter_config.json", broken.dump());
  EXPECT_THROW(AdapterFile::read(tmp / "peft"), std::runtime_error);
}

TEST(DoraAdapter, MergeEqualsTheRuntimePathAndReportsTheKeptDeltaOn4Bit) {
  LORA_REQUIRE_SHARED(test::kStories);
  TempDir tmp("dora");
  const Model model = load_model(test::stories_dir());
  LoraAdapter a = trained_dora(model);
  save_adapter(tmp / "adapter", a, model, AdapterFormat::peft);
  const std::vector<MergeAdapter> adapters = {{AdapterFile::read(tmp / "adapter"), 1.0}};
  const auto report = merge_adapters(test::stories_dir(), adapters, tmp / "merged");
  EXPECT_EQ(report.merged.size(), a.modules.size());
  const Tensor runtime = logits(model, {&a});
  const Tensor merged = logits(load_model(tmp / "merged"));
  // Within 1e-5 absolute (logits up to about 18). Both sides take the weight rows from
  // dora_adapted_rows (double, rounded once) and multiply by them in one f32 product, so the
  // logits agree bit for bit here; merged rows in f32 (1.6e-5) and the runtime's factored
  // g * (x W^T + scale x A^T B^T) against rows in double (1.3e-5) did not.
  float peak = 0;
  for (float v : runtime.data) peak = std::max(peak, std::fabs(v));
  const float diff = max_abs_diff(merged, runtime);
  std::printf("DoRA merge vs runtime: max |logit diff| %.3g, logits up to %.3g\n", diff, peak);
  EXPECT_LE(diff, 1e-5f);

  ConvertOptions q;
  q.quantize_bits = 4;
  q.group_size = 32;
  convert_model(test::stories_dir(), tmp / "q4", q);
  const auto r4 = merge_adapters(tmp / "q4", adapters, tmp / "merged-q4");
  EXPECT_GT(r4.total.kept(), 0.0);
  EXPECT_LT(r4.total.kept(), 1.0);
  EXPECT_NE(r4.to_text().find("%"), std::string::npos);

  // DoRA rescales the whole weight: another adapter on the same linear is refused.
  LoraAdapter plain = test::adapter_with_random_b(model, {Proj::q}, 2, 4.0f, 0.04f, 5);
  EXPECT_THROW(logits(model, {&a, &plain}), std::runtime_error);
}

TEST(DoraAdapter, RuntimeToggleAndStrengthAsPeft) {
  LORA_REQUIRE_SHARED(test::kStories);
  const Model model = load_model(test::stories_dir());
  LoraAdapter a = trained_dora(model);
  const Tensor base = logits(model);
  a.enabled = false;  // off: the base alone
  EXPECT_TRUE(same_bits(logits(model, {&a}), base));
  a.enabled = true;
  // Strength scales `scale` inside the norm and the branch (PEFT's scale_layer): at 0 the weight
  // is m * W / ||W||, which the trained magnitudes move off the base.
  a.strength = 0.0f;
  EXPECT_GT(max_abs_diff(logits(model, {&a}), base), 1e-3f);
  for (auto& m : a.modules) {
    const FrozenWeight& w = model.layers[m.layer].at(m.proj);
    m.magnitude.value = Tensor({w.rows}, ag::weight_row_norms(w, {}));
  }
  EXPECT_LT(max_abs_diff(logits(model, {&a}), base), 1e-5f);
}

// 20 DoRA steps on three projections with dropout, a checkpoint every 10.
std::vector<std::string> dora_train_args(const fs::path& data, const fs::path& out) {
  return {"--threads",
          "1",
          "train",
          "--model",
          test::stories_dir().string(),
          "--data",
          data.string(),
          "--adapter-path",
          out.string(),
          "--iters",
          "20",
          "--batch-size",
          "4",
          "--learning-rate",
          "5e-3",
          "--fine-tune-type",
          "dora",
          "--num-layers",
          "5",
          "--lora-keys",
          "q_proj,v_proj,down_proj",
          "--steps-per-eval",
          "0",
          "--steps-per-report",
          "5",
          "--max-seq-length",
          "64",
          "--dropout",
          "0.1",
          "--save-every",
          "10",
          "--seed",
          "3"};
}

TEST(DoraAdapter, ResumeFromACheckpointIsBitIdentical) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  TempDir tmp("dora");
  test::make_story_data(tmp / "data");
  auto straight = test::run_lora(dora_train_args(tmp / "data", tmp / "straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  ::setenv("LORA_FAULT_SIGNAL_AT_STEP", "15:9", 1);  // SIGKILL 5 steps after the step-10 checkpoint
  auto killed = test::run_lora(dora_train_args(tmp / "data", tmp / "resumed"));
  ::unsetenv("LORA_FAULT_SIGNAL_AT_STEP");
  ASSERT_NE(killed.exit_code, 0);
  auto resumed =
      test::run_lora({"--threads", "1", "train", "--resume", (tmp / "resumed").string()});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err << resumed.out;
  EXPECT_EQ(test::read_file(tmp / "straight" / "adapters.safetensors"),
            test::read_file(tmp / "resumed" / "adapters.safetensors"));
}

TEST(DoraAdapter, TrainCliTrainsMagnitudesAndLowersTheLoss) {
  LORA_REQUIRE_SHARED(test::kStories);
  LORA_REQUIRE_SHARED(test::kStoriesText);
  TempDir tmp("dora");
  test::make_story_data(tmp / "data");
  const auto r = test::run_lora(dora_train_args(tmp / "data", tmp / "a"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const Model model = load_model(test::stories_dir());
  const AdapterFile file = AdapterFile::read(tmp / "a");
  EXPECT_TRUE(file.dora);
  double moved = 0;
  for (const auto& p : file.pairs) {
    ASSERT_EQ(p.magnitude.size(), std::size_t(p.out));
    const FrozenWeight& w = model.layers[p.layer].at(*pair_proj(p));
    const auto norms = ag::weight_row_norms(w, {});
    for (std::size_t i = 0; i < norms.size(); ++i)
      moved = std::max(moved, double(std::fabs(p.magnitude[i] - norms[i])));
  }
  EXPECT_GT(moved, 1e-4);  // the magnitudes trained
  std::vector<double> losses;
  std::ifstream metrics(tmp / "a" / "metrics.jsonl");
  for (std::string line; std::getline(metrics, line);) {
    const json rec = json::parse(line);
    if (rec["type"] == "train") losses.push_back(rec["loss"].get<double>());
  }
  ASSERT_GE(losses.size(), 2u);
  EXPECT_LT(losses.back(), losses.front());
}

}  // namespace
}  // namespace lora
