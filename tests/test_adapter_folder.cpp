// `lora train` into an adapter folder that already holds an adapter of the other format: the
// folder ends with the new run's adapter alone (one weights file, readable), its checkpoints kept.
#include <gtest/gtest.h>

#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/io/adapter_file.h"

namespace lora::test {
namespace {

namespace fs = std::filesystem;

CommandResult train_into(const fs::path& out, const fs::path& data, const std::string& format) {
  return run_lora(stories_train_args(
      data, out,
      {"--iters", "2", "--batch-size", "4", "--max-seq-length", "32", "--num-layers", "2",
       "--val-batches", "0", "--save-every", "1", "--format", format}));
}

TEST(AdapterFolder, TrainingInAnotherFormatReplacesTheAdapter) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("adapter-folder");
  make_story_data(tmp / "data", 8, 0);
  const fs::path out = tmp / "out";
  auto r = train_into(out, tmp / "data", "mlx");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(fs::exists(out / "adapters.safetensors"));

  r = train_into(out, tmp / "data", "peft");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(fs::exists(out / "adapters.safetensors"));
  EXPECT_TRUE(fs::exists(out / "adapter_model.safetensors"));
  EXPECT_EQ(AdapterFile::read(out).format, AdapterFormat::peft);
  EXPECT_TRUE(fs::exists(out / "checkpoints"));
  EXPECT_FALSE(fs::exists(out / ".adapter-staging"));

  // The folder is one adapter a command can use.
  r = run_lora({"--threads", "1", "eval", "--model", (shared_dir() / kStoriesModel).string(),
                "--adapter-path", out.string(), "--data", (tmp / "data").string(), "--split",
                "train"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

}  // namespace
}  // namespace lora::test
