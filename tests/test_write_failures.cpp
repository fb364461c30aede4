// Writes that fail part way (a file size limit standing in for a full disk, a read-only folder, a
// folder that cannot be created) give a clear error, leave the previous good files byte for byte
// as they were, and leave no temporary file or folder behind. The adapter folder is checked before
// training starts.
#include <gtest/gtest.h>
#include <unistd.h>

#include <map>

#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/io/output_preflight.h"

namespace lora::test {
namespace {

namespace fs = std::filesystem;

const char* kStoriesGguf = "models/stories260K-gguf/stories260K-f32.gguf";

// Every file under `dir` (recursively) with its bytes.
std::map<std::string, std::string> snapshot(const fs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out[fs::relative(e.path(), dir).string()] = read_file(e.path());
  return out;
}

// The checkpoints part of a snapshot of an adapter folder, relative to checkpoints/.
std::map<std::string, std::string> before_checkpoints(
    const std::map<std::string, std::string>& all) {
  std::map<std::string, std::string> out;
  for (const auto& [name, bytes] : all)
    if (name.rfind("checkpoints/", 0) == 0) out[name.substr(12)] = bytes;
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

// The CLI with the write permission of `read_only` taken away for the run. Root ignores
// permission bits, so as root the command runs as nobody (setpriv), for whom they hold; its inputs
// (the temporary folders, ../shared, the build) are readable by everyone.
CommandResult run_lora_read_only(const fs::path& read_only, const std::vector<std::string>& args) {
  constexpr auto kWrite = fs::perms::owner_write | fs::perms::group_write | fs::perms::others_write;
  fs::permissions(read_only, kWrite, fs::perm_options::remove);
  std::vector<std::string> argv;
  if (::geteuid() == 0) argv = {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"};
  argv.push_back(lora_bin());
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = run_program(argv);
  fs::permissions(read_only, fs::perms::owner_write, fs::perm_options::add);
  return r;
}

// Lets anyone write under `dir` (for the unprivileged runs above).
void open_to_all(const fs::path& dir) {
  constexpr auto kAll = fs::perms::all;
  fs::permissions(dir, kAll, fs::perm_options::add);
  for (const auto& e : fs::recursive_directory_iterator(dir))
    fs::permissions(e.path(),
                    e.is_directory() ? kAll
                                     : fs::perms::owner_read | fs::perms::owner_write |
                                           fs::perms::group_read | fs::perms::group_write |
                                           fs::perms::others_read | fs::perms::others_write,
                    fs::perm_options::add);
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

// The earlier run whose files a failed write must keep: the data, then seed 1 trained into `out`.
void train_earlier_run(const TempDir& tmp, const fs::path& out, const std::string& save_every) {
  make_story_data(tmp / "data");
  const CommandResult first = run_lora(train_args(tmp / "data", out, "1", save_every));
  ASSERT_EQ(first.exit_code, 0) << first.err;
}

// The adapter (about 40 KB here) does not fit a 20 KB file limit: the final write fails and the
// adapter of the earlier run stays as it was.
TEST(WriteFailures, FinalAdapterWriteKeepsThePreviousAdapter) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("writefail");
  const fs::path out = tmp / "out";
  ASSERT_NO_FATAL_FAILURE(train_earlier_run(tmp, out, "0"));
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
  const fs::path out = tmp / "out";
  ASSERT_NO_FATAL_FAILURE(train_earlier_run(tmp, out, "1"));
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

// merge and convert, each to a model folder and to a GGUF file, all under `outs`. The first set
// writes them; `again` rewrites them differently.
struct OutputCommands {
  std::vector<std::vector<std::string>> first, again;
};

OutputCommands merge_and_convert_commands(const fs::path& adapter, const fs::path& outs) {
  const std::string model = (shared_dir() / kStoriesModel).string();
  const std::string gguf = (shared_dir() / kStoriesGguf).string();
  const std::string a = adapter.string();
  OutputCommands c;
  c.first = {
      {"merge", "--model", model, "--adapter-path", a, "--out", (outs / "merged").string()},
      {"convert", "--model", model, "--quantize", "4", "--q-group-size", "32", "--out",
       (outs / "converted").string()},
      {"merge", "--model", gguf, "--adapter-path", a, "--out", (outs / "merged.gguf").string()},
      {"convert", "--model", model, "--q-type", "f32", "--out",
       (outs / "converted.gguf").string()}};
  c.again = {{"merge", "--model", model, "--adapter-path", a, "--adapter-scale", "0.5", "--out",
              (outs / "merged").string()},
             {"convert", "--model", model, "--quantize", "8", "--q-group-size", "32", "--out",
              (outs / "converted").string()},
             {"merge", "--model", gguf, "--adapter-path", a, "--adapter-scale", "0.5", "--out",
              (outs / "merged.gguf").string()},
             {"convert", "--model", model, "--q-type", "f16", "--out",
              (outs / "converted.gguf").string()}};
  return c;
}

// The adapter, then every output of `c.first` from it.
void write_earlier_outputs(const TempDir& tmp, const OutputCommands& c) {
  ASSERT_NO_FATAL_FAILURE(train_earlier_run(tmp, tmp / "adapter", "0"));
  for (const auto& args : c.first) {
    const CommandResult ok = run_lora(args);
    ASSERT_EQ(ok.exit_code, 0) << args[0] << " " << args.back() << ": " << ok.err;
  }
}

// merge and convert write whole model folders (about 1 MB of weights) and GGUF files (about 1 MB
// in f32): under a 100 KB limit every output from the earlier runs stays as it was.
TEST(WriteFailures, MergeAndConvertKeepThePreviousOutputOnAFullDisk) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  LORA_REQUIRE_SHARED(kStoriesGguf);
  TempDir tmp("writefail");
  const fs::path outs = tmp / "outs";
  const OutputCommands c = merge_and_convert_commands(tmp / "adapter", outs);
  ASSERT_NO_FATAL_FAILURE(write_earlier_outputs(tmp, c));
  const auto before = snapshot(outs);
  for (const auto& args : c.again) {
    expect_write_error(run_lora_limited(100000, args));
    EXPECT_EQ(snapshot(outs), before) << args[0] << " " << args.back();
    EXPECT_EQ(temporaries(tmp.path()), std::vector<std::string>{}) << args.back();
  }
}

// The same outputs in a folder that has become read-only: each command fails with an error naming
// the folder, and every output stays as it was.
TEST(WriteFailures, MergeAndConvertKeepThePreviousOutputInAReadOnlyFolder) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  LORA_REQUIRE_SHARED(kStoriesGguf);
  TempDir tmp("writefail");
  const fs::path outs = tmp / "outs";
  const OutputCommands c = merge_and_convert_commands(tmp / "adapter", outs);
  ASSERT_NO_FATAL_FAILURE(write_earlier_outputs(tmp, c));
  const auto before = snapshot(outs);
  for (const auto& args : c.again) {
    const CommandResult r = run_lora_read_only(outs, args);
    EXPECT_NE(r.exit_code, 0) << args.back();
    EXPECT_NE(r.err.find("lora: error:"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("Permission denied"), std::string::npos) << r.err;
    EXPECT_NE(r.err.find(outs.string()), std::string::npos) << r.err;
    EXPECT_EQ(snapshot(outs), before) << args[0] << " " << args.back();
    EXPECT_EQ(temporaries(tmp.path()), std::vector<std::string>{}) << args.back();
  }
}

// An adapter folder that has become read-only is refused before training, its adapter intact.
TEST(WriteFailures, ReadOnlyAdapterFolderKeepsThePreviousAdapter) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("writefail");
  const fs::path out = tmp / "out";
  ASSERT_NO_FATAL_FAILURE(train_earlier_run(tmp, out, "0"));
  const auto before = snapshot(out);
  const CommandResult r = run_lora_read_only(out, train_args(tmp / "data", out, "2", "0"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("cannot write to"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("step"), std::string::npos) << "refused before training: " << r.err;
  EXPECT_EQ(snapshot(out), before);
  EXPECT_EQ(temporaries(tmp.path()), std::vector<std::string>{});
}

// The checkpoints folder of an earlier run has become read-only while the adapter folder has not:
// the run stops at its first checkpoint with an error naming it, and the earlier checkpoints and
// adapter stay as they were.
TEST(WriteFailures, ReadOnlyCheckpointFolderKeepsThePreviousCheckpoints) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("writefail");
  const fs::path out = tmp / "out";
  ASSERT_NO_FATAL_FAILURE(train_earlier_run(tmp, out, "1"));
  open_to_all(out);
  const auto before = snapshot(out);
  const CommandResult r =
      run_lora_read_only(out / "checkpoints", train_args(tmp / "data", out, "2", "1"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("lora: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("checkpoints"), std::string::npos) << r.err;
  EXPECT_EQ(snapshot(out / "checkpoints"), before_checkpoints(before));
  EXPECT_EQ(read_file(out / "adapters.safetensors"), before.at("adapters.safetensors"));
  EXPECT_EQ(temporaries(tmp.path()), std::vector<std::string>{});
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
