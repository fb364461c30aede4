// A run whose numbers diverge (a learning rate of 1e30) stops at the step where the loss or the
// gradient norm stops being finite, names the step and the last good checkpoint, and writes no
// adapter; the writers refuse inf and NaN values themselves.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/finite_guard.h"
#include "trainer/io/adapter_file.h"
#include "trainer/io/checkpoint.h"
#include "trainer/io/finite_values.h"
#include "trainer/io/safetensors.h"
#include "trainer/lora.h"
#include "trainer/random_model.h"

namespace lora::test {
namespace {

namespace fs = std::filesystem;

// Trains `model` at a learning rate of 1e30 with a checkpoint every step, and checks the stop.
void expect_divergence_stops(const fs::path& model, const fs::path& tmp) {
  make_story_data(tmp / "data");
  const fs::path out = tmp / "out";
  auto r = run_lora(
      model_train_args(model, tmp / "data", out,
                       {"--batch-size", "4", "--max-seq-length", "64", "--num-layers", "-1",
                        "--iters", "20", "--learning-rate", "1e30", "--steps-per-eval", "0",
                        "--save-every", "1", "--keep-checkpoints", "100"}));
  ASSERT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.err.find("diverged"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--learning-rate"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--grad-clip"), std::string::npos) << r.err;
  // No adapter at the top of the folder; the checkpoints are the steps before the stop, all
  // finite, and the message names the last of them.
  EXPECT_FALSE(fs::exists(out / "adapters.safetensors"));
  const auto saved = list_checkpoints(out);
  const auto at = r.err.find("step ");
  ASSERT_NE(at, std::string::npos) << r.err;
  const int64_t stopped = std::stoll(r.err.substr(at + 5));
  EXPECT_LT(stopped, 20) << r.err;
  ASSERT_EQ(int64_t(saved.size()), stopped - 1) << r.err;
  if (!saved.empty())
    EXPECT_NE(r.err.find(saved.back().string()), std::string::npos) << r.err;
  else
    EXPECT_NE(r.err.find("No checkpoint"), std::string::npos) << r.err;
  for (const auto& dir : saved)
    for (const char* file : {"adapters.safetensors", "state.safetensors"}) {
      const auto st = SafetensorsFile::open(dir / file);
      for (const auto& t : st.tensors())
        EXPECT_EQ(first_non_finite(st.read_f32(t.name)), -1) << dir / file << " " << t.name;
    }
}

TEST(Divergence, HugeLearningRateOnStoriesStopsWithoutAnAdapter) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("diverge");
  expect_divergence_stops(shared_dir() / kStoriesModel, tmp.path());
}

TEST(Divergence, HugeLearningRateOnARandomModelStopsWithoutAnAdapter) {
  LORA_REQUIRE_TORCH();
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("diverge");
  const auto mk = run_program(
      {torch_python(), (fs::path(LORA_SOURCE_DIR) / "scripts/make_random_model.py").string(),
       (tmp / "model").string(), "--arch", "qwen2", "--byte-tokenizer", "--vocab", "300"});
  ASSERT_EQ(mk.exit_code, 0) << mk.err;
  expect_divergence_stops(tmp / "model", tmp.path());
}

LoraAdapter small_adapter() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 2;
  c.head_dim = 8;
  c.vocab_size = 32;
  LoraConfig lc;
  lc.rank = 2;
  lc.num_layers = -1;
  LoraAdapter adapter = LoraAdapter::create(make_random_model(c, 1), lc, 1);
  for (auto& m : adapter.modules)
    for (float& v : m.B.value.data) v = 0.5f;
  return adapter;
}

TEST(Divergence, StepCheckNamesTheStepAndPassesFiniteNumbers) {
  TempDir tmp("diverge");
  LoraAdapter adapter = small_adapter();
  EXPECT_NO_THROW(check_step_finite(3, 2.5, 1e30, adapter, tmp.path(), 1e-3));
  EXPECT_NO_THROW(check_step_finite(3, 1e-5, 0.0, adapter, tmp.path(), 1e-3));  // all certain
  EXPECT_THROW(check_step_finite(3, 6.2, 0.0, adapter, tmp.path(), 1e-3), DivergedError);
  const double inf = std::numeric_limits<double>::infinity();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (auto [loss, norm] : {std::pair{nan, 1.0}, std::pair{2.0, inf}, std::pair{inf, nan}}) {
    try {
      check_step_finite(7, loss, norm, adapter, tmp.path(), 0.5);
      ADD_FAILURE() << "no stop for loss " << loss << " norm " << norm;
    } catch (const DivergedError& e) {
      EXPECT_EQ(e.step(), 7);
      EXPECT_NE(std::string(e.what()).find("step 7"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("No checkpoint"), std::string::npos) << e.what();
      // The advice names settings, not flags: the CLI spells those.
      EXPECT_EQ(std::string(e.what()).find("--"), std::string::npos) << e.what();
      ASSERT_EQ(e.alternatives().size(), 2u);
      EXPECT_EQ(e.alternatives()[0][0].setting, "learning_rate");
      EXPECT_EQ(e.alternatives()[0][0].value, "0.05");
      EXPECT_EQ(e.alternatives()[1][0].setting, "grad_clip");
    }
  }
}

// Values of 1e20 in A and B: each finite, but B A is past f32's 3.4e38, which the forward would
// turn into inf or, after a norm, into zeros. The second module is named.
TEST(Divergence, AnUpdateOutsideF32IsCaughtWithFiniteLossAndNorm) {
  LoraAdapter adapter = small_adapter();
  EXPECT_EQ(overflowing_module(adapter), "");
  adapter.modules[1].A.value.data[0] = 1e20f;
  EXPECT_EQ(overflowing_module(adapter), "");  // B is 0.5: the update is about 1e20
  adapter.modules[1].B.value.data[3] = -1e20f;
  EXPECT_EQ(overflowing_module(adapter), "model.layers.0.self_attn.v_proj");
  TempDir tmp("diverge");
  EXPECT_THROW(check_step_finite(2, 6.2, 0.5, adapter, tmp.path(), 1e30), DivergedError);
  adapter.modules[1].B.value.data[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(overflowing_module(adapter), "model.layers.0.self_attn.v_proj");
}

TEST(Divergence, AdapterWriterRefusesNonFiniteValuesAndWritesNothing) {
  TempDir tmp("diverge");
  AdapterFile file;
  AdapterPair p;
  p.layer = 0;
  p.module = "self_attn.q_proj";
  p.rank = 1;
  p.in = 2;
  p.out = 2;
  p.a = {0.5f, 0.25f};
  p.b = {1.0f, std::numeric_limits<float>::infinity()};
  file.pairs.push_back(p);
  file.base_num_layers = 1;
  for (auto format : {AdapterFormat::mlx, AdapterFormat::peft}) {
    const fs::path dir = tmp / std::string(adapter_format_name(format));
    try {
      file.write(dir, format);
      ADD_FAILURE() << "an inf was written";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find("self_attn.q_proj B"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir));
  }
  file.pairs[0].b[1] = 2.0f;  // the same adapter, finite, is written
  EXPECT_NO_THROW(file.write(tmp / "ok", AdapterFormat::mlx));
}

}  // namespace
}  // namespace lora::test
