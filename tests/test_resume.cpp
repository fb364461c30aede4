// Exact resume: 40 steps straight vs 20 steps, a kill (SIGKILL or SIGINT), and a resume to 40
// give bit-identical adapter files and logged losses. Also: resuming with other settings or
// another model is refused with a message naming the difference.
#include <gtest/gtest.h>

#include <cstdlib>

#include "support/test_support.h"
#include "train_fixtures.h"

namespace lora::test {
namespace {

// Fault injection into the child process: raise `sig` after optimizer step `step`.
class FaultAt {
 public:
  FaultAt(int step, int sig) {
    ::setenv("LORA_FAULT_SIGNAL_AT_STEP",
             (std::to_string(step) + ":" + std::to_string(sig)).c_str(), 1);
  }
  ~FaultAt() { ::unsetenv("LORA_FAULT_SIGNAL_AT_STEP"); }
};

std::vector<std::string> train_args(const std::filesystem::path& data,
                                    const std::filesystem::path& out) {
  return {"--threads",
          "1",
          "train",
          "--model",
          (shared_dir() / kStoriesModel).string(),
          "--data",
          data.string(),
          "--adapter-path",
          out.string(),
          "--iters",
          "40",
          "--batch-size",
          "2",
          "--max-seq-length",
          "32",
          "--learning-rate",
          "2e-3",
          "--optimizer",
          "adamw",
          "--lr-schedule",
          "cosine",
          "--warmup",
          "5",
          "--dropout",
          "0.1",
          "--grad-clip",
          "1.0",
          "--steps-per-report",
          "3",
          "--steps-per-eval",
          "10",
          "--val-batches",
          "2",
          "--save-every",
          "20",
          "--num-layers",
          "3",
          "--lora-keys",
          "q_proj,v_proj,down_proj",
          "--seed",
          "7"};
}

void expect_same_run(const std::filesystem::path& a, const std::filesystem::path& b) {
  EXPECT_EQ(read_file(a / "adapters.safetensors"), read_file(b / "adapters.safetensors"));
  auto la = logged_losses(a / "metrics.jsonl"), lb = logged_losses(b / "metrics.jsonl");
  EXPECT_GT(la.size(), 15u);
  EXPECT_EQ(la, lb);
}

TEST(Resume, KillNineThenResumeIsBitIdentical) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("resume");
  make_story_data(tmp / "data");
  auto straight = run_lora(train_args(tmp / "data", tmp / "straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.err;

  {
    FaultAt kill(26, SIGKILL);  // dies 6 steps after the step-20 checkpoint
    auto killed = run_lora(train_args(tmp / "data", tmp / "resumed"));
    ASSERT_NE(killed.exit_code, 0);
  }
  EXPECT_FALSE(std::filesystem::exists(tmp / "resumed/adapters.safetensors"));
  // Only the flags that are not part of the run may be given; the rest come from the checkpoint.
  auto resumed = run_lora({"--threads", "1", "train", "--resume", (tmp / "resumed").string()});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err << resumed.out;
  EXPECT_NE(resumed.out.find("resuming at step 20"), std::string::npos) << resumed.out;
  expect_same_run(tmp / "straight", tmp / "resumed");
}

TEST(Resume, SigintSavesACheckpointAndResumeIsBitIdentical) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("resume");
  make_story_data(tmp / "data");
  auto straight = run_lora(train_args(tmp / "data", tmp / "straight"));
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
  {
    FaultAt interrupt(13, SIGINT);  // between reports and before any scheduled checkpoint
    auto stopped = run_lora(train_args(tmp / "data", tmp / "resumed"));
    EXPECT_NE(stopped.exit_code, 0);
    EXPECT_NE(stopped.err.find("lora train --resume"), std::string::npos) << stopped.err;
  }
  EXPECT_TRUE(std::filesystem::exists(tmp / "resumed/checkpoints/step-00000013/state.json"));
  auto resumed = run_lora({"--threads", "1", "train", "--resume",
                           (tmp / "resumed/checkpoints/step-00000013").string()});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  expect_same_run(tmp / "straight", tmp / "resumed");
}

TEST(Resume, IncompatibleSettingsAndOtherModelsAreRefused) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("resume");
  make_story_data(tmp / "data");
  auto args = train_args(tmp / "data", tmp / "run");
  args[std::size_t(std::find(args.begin(), args.end(), "40") - args.begin())] = "20";  // --iters 20
  ASSERT_EQ(run_lora(args).exit_code, 0);
  const std::string ckpt = (tmp / "run/checkpoints/step-00000020").string();

  auto rank =
      run_lora({"--threads", "1", "train", "--resume", ckpt, "--rank", "4", "--iters", "40"});
  EXPECT_NE(rank.exit_code, 0);
  EXPECT_NE(rank.err.find("rank is 4 here but 8 in the checkpoint"), std::string::npos) << rank.err;
  // A decaying schedule's horizon is --iters, so extending a cosine run is not the same run.
  EXPECT_NE(rank.err.find("iters is 40 here but 20"), std::string::npos) << rank.err;

  // Another model: stories260K's weights under a config that differs in one number.
  std::filesystem::create_directories(tmp / "other");
  auto config = nlohmann::json::parse(read_file(shared_dir() / kStoriesModel / "config.json"));
  config["rms_norm_eps"] = 1e-6;
  write_file(tmp / "other/config.json", config.dump());
  for (const char* f : {"model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    std::filesystem::copy_file(shared_dir() / kStoriesModel / f, tmp / "other" / f);
  auto model = run_lora({"--threads", "1", "train", "--resume", ckpt, "--iters", "40", "--model",
                         (tmp / "other").string()});
  EXPECT_NE(model.exit_code, 0);
  EXPECT_NE(model.err.find("made with another model"), std::string::npos) << model.err;

  auto data = run_lora({"--threads", "1", "train", "--resume", ckpt, "--train",
                        (tmp / "data/valid.jsonl").string()});
  EXPECT_NE(data.exit_code, 0);
  EXPECT_NE(data.err.find("differs from the data the checkpoint was trained on"), std::string::npos)
      << data.err;

  auto done = run_lora({"--threads", "1", "train", "--resume", ckpt});
  EXPECT_NE(done.exit_code, 0);
  EXPECT_NE(done.err.find("raise --iters"), std::string::npos) << done.err;
}

}  // namespace
}  // namespace lora::test
