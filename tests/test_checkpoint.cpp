// Checkpoints: a round trip restores every value and moment; a crash (a killed process) or an
// error while a checkpoint is being written leaves the previous one loadable and in place.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

#include "support/test_support.h"
#include "trainer/io/checkpoint.h"
#include "trainer/random_model.h"

namespace lora {
namespace {

using test::TempDir;

Model tiny_model() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 2;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 32;
  c.raw = {{"model_type", "llama"}, {"hidden_size", 16}};
  return make_random_model(c, 1);
}

struct FakeRun {
  Model model = tiny_model();
  LoraAdapter adapter;
  Optimizer optimizer;
  FakeRun()
      : adapter(LoraAdapter::create(model, LoraConfig{}, 3)),
        optimizer(OptimizerConfig{}, adapter.parameters()) {}
  // One fake step: gradients from a formula, so values and moments change.
  void step(float k) {
    for (auto* p : adapter.parameters()) {
      p->zero_grad();
      for (std::size_t i = 0; i < p->grad.data.size(); ++i) p->grad.data[i] = k * float(i % 7) - 1;
    }
    optimizer.step(0.01f);
  }
  CheckpointContent content(int64_t step) {
    CheckpointContent c;
    c.progress.step = step;
    c.progress.cursor = {1, 2};
    c.progress.window_loss = 0.1 * double(step);
    c.config = {{"rank", 8}};
    c.model_fingerprint = model_fingerprint(model);
    c.data_fingerprint = "d";
    c.metrics = "{\"step\":" + std::to_string(step) + "}\n";
    return c;
  }
};

TEST(Checkpoint, RoundTripRestoresValuesMomentsAndProgress) {
  TempDir tmp("ckpt");
  FakeRun a;
  a.step(1);
  a.step(2);
  save_checkpoint(checkpoint_dir(tmp.path(), 2), a.adapter, a.optimizer, a.model,
                  AdapterFormat::mlx, a.content(2));
  const auto ck = load_checkpoint(resolve_checkpoint(tmp.path()));
  EXPECT_EQ(ck.content.progress.step, 2);
  EXPECT_EQ(ck.content.progress.cursor, (data::DataCursor{1, 2}));
  EXPECT_EQ(ck.content.progress.window_loss, 0.2);
  EXPECT_EQ(ck.content.metrics, "{\"step\":2}\n");
  EXPECT_EQ(ck.optimizer_steps, 2);

  FakeRun b;  // fresh run, same config: restoring makes it identical, and it stays so
  restore_checkpoint(ck, b.adapter, b.optimizer);
  a.step(3);
  b.step(3);
  auto pa = a.adapter.parameters(), pb = b.adapter.parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (std::size_t i = 0; i < pa.size(); ++i) EXPECT_EQ(pa[i]->value.data, pb[i]->value.data) << i;
  // The checkpoint is also a usable adapter folder.
  EXPECT_TRUE(std::filesystem::exists(checkpoint_dir(tmp.path(), 2) / "adapters.safetensors"));
}

TEST(Checkpoint, KilledWhileWritingLeavesThePreviousCheckpoint) {
  TempDir tmp("ckpt");
  FakeRun run;
  run.step(1);
  save_checkpoint(checkpoint_dir(tmp.path(), 10), run.adapter, run.optimizer, run.model,
                  AdapterFormat::mlx, run.content(10));
  const auto before = load_checkpoint(checkpoint_dir(tmp.path(), 10));
  run.step(2);

  // A real crash: the child dies (no unwinding, no cleanup) with the new checkpoint's tensors
  // written but the folder not yet in place. Then the same for a rewrite of step 10 itself.
  for (int64_t step : {20, 10}) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      save_checkpoint(checkpoint_dir(tmp.path(), step), run.adapter, run.optimizer, run.model,
                      AdapterFormat::mlx, run.content(step),
                      [](const std::filesystem::path&) { ::_exit(3); });
      ::_exit(0);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    ASSERT_TRUE(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 3) << "the crash hook did not run";
  }
  auto all = list_checkpoints(tmp.path());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], checkpoint_dir(tmp.path(), 10));
  const auto after = load_checkpoint(resolve_checkpoint(tmp.path()));
  EXPECT_EQ(after.content.progress.step, 10);
  ASSERT_EQ(after.values.size(), before.values.size());
  for (std::size_t i = 0; i < after.values.size(); ++i)
    EXPECT_EQ(after.values[i].data, before.values[i].data);

  // An error (not a crash) while writing removes its temporary folder too.
  EXPECT_THROW(
      save_checkpoint(checkpoint_dir(tmp.path(), 30), run.adapter, run.optimizer, run.model,
                      AdapterFormat::mlx, run.content(30),
                      [](const std::filesystem::path&) { throw std::runtime_error("disk full"); }),
      std::runtime_error);
  EXPECT_EQ(list_checkpoints(tmp.path()).size(), 1u);
}

TEST(Checkpoint, PruneKeepsTheNewest) {
  TempDir tmp("ckpt");
  FakeRun run;
  for (int64_t s : {5, 10, 15, 20})
    save_checkpoint(checkpoint_dir(tmp.path(), s), run.adapter, run.optimizer, run.model,
                    AdapterFormat::mlx, run.content(s));
  // What a run killed while pruning leaves: the checkpoint it was deleting, set aside.
  std::filesystem::create_directories(tmp / "checkpoints/.step-00000001.old-1-2");
  test::write_file(tmp / "checkpoints/.step-00000001.old-1-2/state.json", "{}");
  prune_checkpoints(tmp.path(), 2);
  auto all = list_checkpoints(tmp.path());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].filename(), "step-00000015");
  EXPECT_EQ(all[1].filename(), "step-00000020");
  // Nothing else is left in the folder: neither the old leftover nor the pruned ones set aside.
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(tmp / "checkpoints"))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"step-00000015", "step-00000020"}));
}

TEST(Checkpoint, BrokenCheckpointsGiveClearErrors) {
  TempDir tmp("ckpt");
  EXPECT_THROW(resolve_checkpoint(tmp / "missing"), std::runtime_error);
  try {
    resolve_checkpoint(tmp.path());
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("neither a checkpoint"), std::string::npos);
  }
  std::filesystem::create_directories(tmp / "c");
  test::write_file(tmp / "c/state.json", "{\"version\": 1, \"step\": ");
  try {
    load_checkpoint(tmp / "c");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("state.json"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lora
