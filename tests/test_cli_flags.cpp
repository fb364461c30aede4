// The CLI's flags: `lora train`'s --help groups, mlx-lm's `--train` switch beside `--train FILE`,
// the old spellings that keep working (--valid, merge's --strength), one check of --quantize for
// every command, library errors shown with the flag that set the value, generate's statistics
// after its text, and the layout rule that keeps CLI11 out of the library.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "trainer/train_options.h"

namespace lora::test {
namespace {

const char* kStories = "models/stories260K";

std::string stories() { return (shared_dir() / kStories).string(); }

// `lora train ARGS --print-config`, parsed.
nlohmann::json printed_config(std::vector<std::string> args) {
  args.insert(args.begin(), "train");
  args.push_back("--print-config");
  const CommandResult r = run_lora(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
}

TEST(TrainFlags, HelpGroupsEverySettingUnderAHeading) {
  const CommandResult r = run_lora({"train", "--help"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<std::size_t> headings;
  for (const char* h :
       {"Model and data", "LoRA (", "Optimizer (", "Schedule (", "Evaluation and checkpoints",
        "Performance and memory", "Output (", "Config and resume"}) {
    headings.push_back(r.out.find(std::string("\n") + h));
    EXPECT_NE(headings.back(), std::string::npos) << h << "\n" << r.out;
  }
  EXPECT_TRUE(std::is_sorted(headings.begin(), headings.end())) << r.out;
  const std::size_t first_group = headings.front();
  for (const auto& f : train_fields()) {
    const std::size_t at = r.out.find(std::string("  --") + f.flag + " ");
    EXPECT_NE(at, std::string::npos) << f.flag;
    EXPECT_GT(at, first_group) << "--" << f.flag << " is not in a group";
  }
  // The compatible spellings work but do not clutter --help.
  EXPECT_EQ(r.out.find("--valid "), std::string::npos) << r.out;
}

TEST(TrainFlags, TrainIsASwitchOrAFile) {
  nlohmann::json j = printed_config({"--model", "m", "--data", "d", "--train"});
  EXPECT_EQ(j["train_file"], "");
  EXPECT_EQ(j["data"], "d");
  j = printed_config({"--model", "m", "--train", "a.jsonl", "--valid", "b.jsonl"});
  EXPECT_EQ(j["train_file"], "a.jsonl");
  EXPECT_EQ(j["valid_file"], "b.jsonl");
  // The clearly named flag wins over the old spelling.
  j = printed_config({"--model", "m", "--train", "a.jsonl", "--train-file", "c.jsonl"});
  EXPECT_EQ(j["train_file"], "c.jsonl");
}

TEST(TrainFlags, LibraryErrorsNameTheFlag) {
  const CommandResult r =
      run_lora({"train", "--model", "m", "--data", "d", "--learning-rate", "-1"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("lora: error: --learning-rate: must be"), std::string::npos) << r.err;
  const CommandResult none = run_lora({"train", "--model", "m"});
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("--data: no training data"), std::string::npos) << none.err;
}

TEST(QuantizeFlag, EveryCommandRefusesTheSameBits) {
  TempDir tmp("flags");
  const std::string reason = "bits must be one of 2, 3, 4, 5, 6, 8, got 7";
  const std::vector<std::vector<std::string>> commands = {
      {"train", "--model", "m", "--data", "d", "--quantize", "7"},
      {"generate", "--model", "m", "--quantize", "7"},
      {"eval", "--model", "m", "--data", "d", "--no-adapter", "--quantize", "7"},
      {"convert", "--model", "m", "--out", (tmp / "o").string(), "--quantize", "7"},
  };
  for (const auto& args : commands) {
    const CommandResult r = run_lora(args);
    EXPECT_NE(r.exit_code, 0) << args[0];
    EXPECT_NE(r.err.find("--quantize: " + reason), std::string::npos) << args[0] << ": " << r.err;
  }
  const CommandResult group = run_lora({"generate", "--model", "m", "--q-group-size", "48"});
  EXPECT_NE(group.err.find("--q-group-size: must be 32, 64 or 128"), std::string::npos)
      << group.err;
}

TEST(AdapterScale, OneNameInGenerateAndMergeWithStrengthKept) {
  TempDir tmp("flags");
  const std::string a = (tmp / "a").string();
  const std::string expect = "give --adapter-scale once, or once per --adapter-path";
  for (const char* flag : {"--adapter-scale", "--strength"}) {
    const CommandResult merge = run_lora({"merge", "--model", "m", "--adapter-path", a, flag, "1",
                                          "2", "--out", (tmp / "o").string()});
    EXPECT_NE(merge.exit_code, 0);
    EXPECT_NE(merge.err.find(expect), std::string::npos) << flag << ": " << merge.err;
  }
  LORA_REQUIRE_SHARED(kStories);
  const CommandResult gen = run_lora(
      {"generate", "--model", stories(), "--adapter-path", a, "--adapter-scale", "1", "2"});
  EXPECT_NE(gen.exit_code, 0);
  EXPECT_NE(gen.err.find(expect), std::string::npos) << gen.err;
}

TEST(GenerateCli, StatisticsFollowTheTextOnTheirOwnLine) {
  LORA_REQUIRE_SHARED(kStories);
  const std::string bin =
      std::getenv("LORA_BIN") ? std::getenv("LORA_BIN") : std::string(LORA_BINARY_DIR) + "/lora";
  // Both streams into one pipe: stdout is block-buffered there, so only a flush before the
  // statistics keeps them from cutting into the text.
  const CommandResult r = run_program(
      {"sh", "-c",
       "\"$0\" generate --model \"$1\" --prompt 'Once upon a time' --max-tokens 40 2>&1", bin,
       stories()});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  ASSERT_GT(r.out.size(), 2u);
  const std::size_t last_line = r.out.rfind('\n', r.out.size() - 2);
  ASSERT_NE(last_line, std::string::npos) << r.out;
  EXPECT_TRUE(r.out.compare(last_line + 1, 7, "prompt:") == 0) << r.out;
  EXPECT_EQ(r.out.find("prompt:"), last_line + 1) << r.out;
  EXPECT_EQ(r.out.find("Once upon a time"), 0u) << r.out;
}

// No library code includes CLI11: only trainer/cli/ parses flags.
TEST(Layout, OnlyTheCliIncludesCli11) {
  namespace fs = std::filesystem;
  const fs::path root = LORA_SOURCE_DIR;
  // `#include`, optional blanks, then <CLI/ or "CLI/ (std::regex trips a GCC 12 warning under
  // ASan).
  auto includes_cli = [](const std::string& text) {
    for (size_t at = text.find("#include"); at != std::string::npos;
         at = text.find("#include", at + 1)) {
      size_t i = at + 8;
      while (i < text.size() && (text[i] == ' ' || text[i] == '\t')) ++i;
      if (i < text.size() && (text[i] == '<' || text[i] == '"') &&
          text.compare(i + 1, 4, "CLI/") == 0)
        return true;
    }
    return false;
  };
  int scanned = 0;
  for (const char* dir : {"autograd", "data", "trainer"})
    for (const auto& e : fs::recursive_directory_iterator(root / dir)) {
      const std::string ext = e.path().extension().string();
      if (!e.is_regular_file() || (ext != ".h" && ext != ".cpp")) continue;
      if (e.path().parent_path() == root / "trainer/cli") continue;
      ++scanned;
      EXPECT_FALSE(includes_cli(read_file(e.path())))
          << fs::relative(e.path(), root) << " includes CLI11";
    }
  EXPECT_GT(scanned, 50);
}

}  // namespace
}  // namespace lora::test
