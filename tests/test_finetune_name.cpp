// Fine-tuning on a data set of our own making: TinyStories sentences in which a new character
// name (Zorbo) replaces the common ones (scripts/make_name_dataset.sh). The demo's `lora train`
// (scripts/demo.sh) on stories260K must drive the validation loss clearly below the base model's,
// and greedy `lora generate --adapter-path` must then write the new name where the base writes
// another, in clean text (no U+FFFD from a cut multi-byte character).
#include <gtest/gtest.h>

#include "support/test_support.h"
#include "train_fixtures.h"

namespace lora::test {
namespace {

constexpr const char* kName = "Zorbo";

double eval_valid_loss(const std::filesystem::path& model, const std::filesystem::path& data,
                       const std::vector<std::string>& adapter_args) {
  std::vector<std::string> args = {"--threads",      "1",      "--json",      "eval",    "--model",
                                   model.string(),   "--data", data.string(), "--split", "valid",
                                   "--test-batches", "-1"};
  args.insert(args.end(), adapter_args.begin(), adapter_args.end());
  const auto r = run_lora(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  if (r.exit_code != 0) return NAN;
  return nlohmann::json::parse(r.out)["loss"].get<double>();
}

std::string generate(const std::filesystem::path& model, const std::vector<std::string>& extra) {
  std::vector<std::string> args = {
      "--threads", "1", "generate",     "--model", model.string(), "--prompt", "Once upon a time",
      "--temp",    "0", "--max-tokens", "40"};
  args.insert(args.end(), extra.begin(), extra.end());
  const auto r = run_lora(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.out;
}

TEST(FinetuneName, ValidationLossFallsAndGenerationUsesTheNewName) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  LORA_REQUIRE_SHARED(kStoriesText);
  const auto model = shared_dir() / kStoriesModel;
  TempDir tmp("finetune_name");
  const auto data = tmp / "data", out = tmp / "adapter";

  const auto made =
      run_program({"bash", std::string(LORA_SOURCE_DIR) + "/scripts/make_name_dataset.sh",
                   (shared_dir() / kStoriesText).string(), kName, data.string()});
  ASSERT_EQ(made.exit_code, 0) << made.err;
  ASSERT_NE(read_file(data / "train.jsonl").find(kName), std::string::npos);
  ASSERT_NE(read_file(data / "valid.jsonl").find(kName), std::string::npos);

  // The base model knows the stories but not the name.
  const double base_loss = eval_valid_loss(model, data, {"--no-adapter"});
  const std::string base_text = generate(model, {});
  ASSERT_FALSE(base_text.empty());
  EXPECT_EQ(base_text.find(kName), std::string::npos) << base_text;

  // scripts/demo.sh's run (about ten seconds on one thread in a release build).
  const auto r = run_lora({"--threads",
                           "1",
                           "train",
                           "--model",
                           model.string(),
                           "--data",
                           data.string(),
                           "--adapter-path",
                           out.string(),
                           "--iters",
                           "150",
                           "--learning-rate",
                           "5e-4",
                           "--num-layers",
                           "5",
                           "--max-seq-length",
                           "128",
                           "--steps-per-report",
                           "20",
                           "--steps-per-eval",
                           "0",
                           "--val-batches",
                           "-1",
                           "--save-every",
                           "0"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  // The run's own final validation loss (metrics.jsonl) and `lora eval` of the written adapter
  // agree, and both are far below the base's.
  std::optional<double> logged;
  std::ifstream f(out / "metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "val") logged = j["loss"].get<double>();
  }
  ASSERT_TRUE(logged.has_value()) << "no validation loss in metrics.jsonl";
  const double tuned_loss = eval_valid_loss(model, data, {"--adapter-path", out.string()});
  EXPECT_NEAR(*logged, tuned_loss, 1e-4);
  // Measured: base 2.255, tuned 1.455 (0.645 of it).
  EXPECT_LT(tuned_loss, 0.7 * base_loss) << "base " << base_loss << ", tuned " << tuned_loss;

  // Greedy generation with the adapter writes the new name; with it loaded but switched off it
  // is the base's story again.
  const std::string tuned_text = generate(model, {"--adapter-path", out.string()});
  EXPECT_NE(tuned_text.find(kName), std::string::npos) << tuned_text;
  EXPECT_EQ(tuned_text.find("\xEF\xBF\xBD"), std::string::npos) << tuned_text;
  EXPECT_EQ(generate(model, {"--adapter-path", out.string(), "--no-adapter"}), base_text);

  std::printf("valid loss: base %.4f, after 150 steps %.4f\nbase:  %s\ntuned: %s\n", base_loss,
              tuned_loss, base_text.c_str(), tuned_text.c_str());
}

}  // namespace
}  // namespace lora::test
