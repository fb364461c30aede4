// Writes that fail part way (a file size limit standing in for a full disk, a folder that cannot
// be created) give a clear error, leave the previous good files byte for byte as they were, and
// leave no temporary file or folder behind. The adapter folder is checked before training starts.
#include <gtest/gtest.h>

#include <map>

#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/io/output_preflight.h"

namespace lora::test {
namespace {

namespace fs = std::filesystem;

// Every file under `dir` (recursively) with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_file(e.path());
  return out;
}

// Temporaries the writers make (".NAME.tmp-*", ".NAME.old-*", the adapter staging folder).
std::vector<std::string> temporaries(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.find(".tmp-") != std::string::npos || name.find(".old-") != std::string::npos ||
        name == ".adapter-staging" || name.find(".lora-write-probe") != std::string::npos)
      out.push_back(e.path().string());
  }
  return out;
}

// The lora CLI with its files limited to `max_bytes` each (RLIMIT_FSIZE): a write past it fails
// with EFBIG, as on a full disk.
CommandResult run_lora_limited(uint64_t max_bytes, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"prlimit", "--fsize=" + std::to_string(max_bytes), lora_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

std::vector<std::string> train_args(const fs::path& data, const fs::path& out,
                                    const std::string& seed, const std::string& save_every) {
  return stories_train_args(data, out, {"--batch-size",
                                        "2",
                                        "--max-seq-length",
                                        "32",
                                        "--num-layers",
                                        "5",
                                        "--iters",
                                        "2",
                                        "--learning-rate",
                                        "1e-3",
                                        "--steps-per-eval",
                                        "0",
                                        "--val-batches",
                                        "0",
                                        "--seed",
                                        seed,
                                        "--save-every",
                                        save_every,
                                        "--keep-checkpoints",
                                        "5"});
}

void expect_write_error(const CommandResult& r) {
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.err.find("lora: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("File too large"), std::string::npos) << r.err;
}

// The adapter (about 40 KB here) does not fit a 20 KB file limit: the final write fails and the
// adapter of the earlier run stays as it was.
TEST(WriteFailures, FinalAdapterWriteKeepsThePreviousAdapter) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("writefail");
  make_story_data(tmp / "data");
  const fs::path out = tmp / "out";
  auto first = run_lora(train_args(tmp / "data", out, "1", "0"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  const std::string adapter = read_file(out / "adapters.safetensors");
  const std::string config = read_file(out / "adapter_config.json");
  ASSERT_GT(adapter.size(), 20000u);

  expect_write_error(run_lora_limited(20000, train_args(tmp / "data", out, "2", "0")));
  EXPECT_EQ(read_file(out / "adapters.safetensors"), adapter);
  EXPECT_EQ(read_file(out / "adapter_config.json"), config);
  EXPECT_EQ(temporaries(tmp.path()), std::vector<std::string>{});
}

// A checkpoint's state file (value and two moments per parameter, about 120 KB) does not fit a
// 60 KB limit though its adapter does: the write fails at step 1, and the checkpoints and adapter
// of the earlier run stay as they were.
TEST(WriteFailures, CheckpointWriteKeepsThePreviousCheckpoints) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("writefail");
  make_story_data(tmp / "data");
  const fs::path out = tmp / "out";
  auto first = run_lora(train_args(tmp / "data", out, "1", "1"));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  ASSERT_TRUE(fs::exists(out / "checkpoints/step-00000001/state.safetensors"));
  const auto checkpoints = snapshot(out / "checkpoints");
  const std::string adapter = read_file(out / "adapters.safetensors");

  auto r = run_lora_limited(60000, train_args(tmp / "data", out, "2", "1"));
  expect_write_error(r);
  EXPECT_NE(r.err.find("state.safetensors"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(out / "checkpoints"), checkpoints);
  EXPECT_EQ(read_file(out / "adapters.safetensors"), adapter);
  EXPECT_EQ(temporaries(tmp.path()), std::vector<std::string>{});
}

// merge and convert write whole model folders (about 1 MB of weights): under a 100 KB limit the
// folder from the earlier run stays as it was.
TEST(WriteFailures, MergeAndConvertKeepThePreviousFolder) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("writefail");
  make_story_data(tmp / "data");
  auto trained = run_lora(train_args(tmp / "data", tmp / "adapter", "1", "0"));
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  const std::string model = (shared_dir() / kStoriesModel).string();
  const std::vector<std::vector<std::string>> commands = {
      {"merge", "--model", model, "--adapter-path", (tmp / "adapter").string(), "--out",
       (tmp / "merged").string()},
      {"convert", "--model", model, "--quantize", "4", "--q-group-size", "32", "--out",
       (tmp / "converted").string()}};
  for (const auto& args : commands) {
    const fs::path folder = args.back();
    auto ok = run_lora(args);
    ASSERT_EQ(ok.exit_code, 0) << ok.err;
    const auto before = snapshot(folder);
    auto again = args;
    if (args[0] == "merge") again.insert(again.end(), {"--strength", "0.5"});
    expect_write_error(run_lora_limited(100000, again));
    EXPECT_EQ(snapshot(folder), before) << args[0];
    EXPECT_EQ(temporaries(tmp.path()), std::vector<std::string>{}) << args[0];
  }
}

// An adapter path that cannot be a folder (under a regular file: root cannot write there either)
// is refused before the model is even read.
TEST(WriteFailures, UnwritableAdapterFolderIsRefusedBeforeTraining) {
  TempDir tmp("writefail");
  write_file(tmp / "file", "x");
  auto r = run_lora({"train", "--model", (tmp / "no-model").string(), "--data",
                     (tmp / "no-data").string(), "--adapter-path", (tmp / "file/out").string()});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot write to"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("is not a folder"), std::string::npos) << r.err;
  EXPECT_EQ(read_file(tmp / "file"), "x");

  EXPECT_THROW(check_folder_writable(tmp / "file/out"), std::runtime_error);
  EXPECT_NO_THROW(check_folder_writable(tmp / "new/nested/out"));
  EXPECT_FALSE(fs::exists(tmp / "new"));  // probing creates nothing
  EXPECT_EQ(temporaries(tmp.path()), std::vector<std::string>{});
}

TEST(WriteFailures, FreeSpaceCheckNamesBothSizes) {
  TempDir tmp("writefail");
  const uint64_t need = training_output_bytes(1'000'000, 2, 3, 1000);
  // The adapter, 4 checkpoints of adapter + value + 2 moments, logs: about 70 MiB.
  EXPECT_GT(need, 4 * 16'000'000u);
  EXPECT_LT(need, 4 * 16'000'000u + 20'000'000u);
  EXPECT_NO_THROW(check_free_space(tmp.path(), need, need));
  try {
    check_free_space(tmp / "out", need, 10u << 20);
    ADD_FAILURE() << "no refusal";
  } catch (const std::runtime_error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("not enough disk space"), std::string::npos) << m;
    EXPECT_NE(m.find("10 MiB"), std::string::npos) << m;
  }
  EXPECT_GT(free_bytes_at(tmp / "does/not/exist"), 0u);
}

}  // namespace
}  // namespace lora::test
