// `lora train` end to end on stories260K: the loss goes down, the adapter folder is complete,
// every record format of ../shared/datasets trains, and broken inputs fail cleanly without
// leaving an adapter behind.
#include <gtest/gtest.h>

#include "autograd/kernels/matmul_bf16.h"
#include "support/test_support.h"
#include "train_fixtures.h"

namespace lora::test {
namespace {

std::vector<std::string> base_args(const std::filesystem::path& out) {
  return {"--threads",
          "1",
          "train",
          "--model",
          (shared_dir() / kStoriesModel).string(),
          "--adapter-path",
          out.string(),
          "--batch-size",
          "4",
          "--max-seq-length",
          "64",
          "--learning-rate",
          "2e-3",
          "--num-layers",
          "5",
          "--steps-per-eval",
          "0",
          "--save-every",
          "0"};
}

std::vector<std::string> with(std::vector<std::string> a, const std::vector<std::string>& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}

TEST(Train, LossFallsSteadilyAndTheAdapterFolderIsComplete) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("train");
  make_story_data(tmp / "data");
  const std::string before = read_file(shared_dir() / kStoriesModel / "model.safetensors");
  auto r = run_lora(with(base_args(tmp / "out"), {"--data", (tmp / "data").string(), "--iters",
                                                  "40", "--steps-per-report", "10"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto train = logged_losses(tmp / "out/metrics.jsonl", "train");
  const auto val = logged_losses(tmp / "out/metrics.jsonl", "val");
  ASSERT_EQ(train.size(), 4u);
  for (std::size_t i = 1; i < train.size(); ++i) EXPECT_LT(train[i], train[i - 1]) << i;
  EXPECT_LT(train.back(), 0.8 * train.front());
  ASSERT_EQ(val.size(), 1u);  // at the end

  for (const char* file :
       {"adapters.safetensors", "adapter_config.json", "metrics.jsonl", "loss_curve.svg"})
    EXPECT_TRUE(std::filesystem::exists(tmp / "out" / file)) << file;
  auto config = nlohmann::json::parse(read_file(tmp / "out/adapter_config.json"));
  EXPECT_EQ(config["fine_tune_type"], "lora");
  EXPECT_EQ(config["num_layers"], 5);
  EXPECT_EQ(config["lora_parameters"]["rank"], 8);
  EXPECT_EQ(config["lora_parameters"]["scale"], 20.0);
  EXPECT_EQ(config["iters"], 40);  // the run's arguments ride along, as mlx-lm writes them
  EXPECT_NE(read_file(tmp / "out/loss_curve.svg").find("<polyline"), std::string::npos);
  // The frozen base is never written.
  EXPECT_EQ(read_file(shared_dir() / kStoriesModel / "model.safetensors"), before);
}

// --compute-dtype bf16 runs the frozen matmuls in bf16 (where the CPU has bf16 units): the logged
// loss curve stays within 2% of the f32 run at every report, and a bad value names the flag.
TEST(Train, ComputeDtypeBf16FollowsTheF32LossCurve) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("train-bf16");
  make_story_data(tmp / "data");
  std::vector<std::vector<double>> curves;
  for (const char* dtype : {"f32", "bf16"}) {
    const auto out = tmp / dtype;
    auto r = run_lora(with(base_args(out), {"--data", (tmp / "data").string(), "--iters", "20",
                                            "--steps-per-report", "5", "--compute-dtype", dtype}));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    if (std::string(dtype) == "bf16" && !bf16_matmul_available()) {
      EXPECT_NE((r.out + r.err).find("no bf16 matmul units"), std::string::npos) << r.out << r.err;
    }
    EXPECT_EQ(nlohmann::json::parse(read_file(out / "adapter_config.json"))["compute_dtype"],
              dtype);
    curves.push_back(logged_losses(out / "metrics.jsonl", "train"));
  }
  ASSERT_EQ(curves[0].size(), 4u);
  ASSERT_EQ(curves[1].size(), curves[0].size());
  for (std::size_t i = 0; i < curves[0].size(); ++i)
    EXPECT_NEAR(curves[1][i], curves[0][i], 0.02 * curves[0][i]) << "report " << i;
  EXPECT_LT(curves[1].back(), curves[1].front());
  if (bf16_matmul_available()) {
    EXPECT_NE(curves[1], curves[0]) << "bf16 asked for, f32 ran";
  }

  auto r = run_lora(with(base_args(tmp / "bad"), {"--data", (tmp / "data").string(), "--iters", "1",
                                                  "--compute-dtype", "fp8"}));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--compute-dtype"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "bad" / "adapters.safetensors"));
}

// --grad-checkpoint trades time for memory and nothing else: with dropout on (its masks must be
// replayed exactly) the logged losses and the adapter are bit-identical to the plain run.
TEST(Train, GradCheckpointGivesTheSameRun) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("train-ckpt");
  make_story_data(tmp / "data");
  std::vector<std::vector<double>> curves;
  std::vector<std::string> adapters;
  for (const bool checkpoint : {false, true}) {
    const auto out = tmp / (checkpoint ? "ckpt" : "plain");
    std::vector<std::string> extra = {
        "--data", (tmp / "data").string(), "--iters", "10", "--steps-per-report", "5", "--dropout",
        "0.1"};
    if (checkpoint) extra.push_back("--grad-checkpoint");
    auto r = run_lora(with(base_args(out), extra));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    curves.push_back(logged_losses(out / "metrics.jsonl", "train"));
    adapters.push_back(read_file(out / "adapters.safetensors"));
  }
  ASSERT_EQ(curves[0].size(), 2u);
  EXPECT_EQ(curves[0], curves[1]);
  EXPECT_FALSE(adapters[0].empty());
  EXPECT_EQ(adapters[0], adapters[1]);
}

TEST(Train, EveryRecordFormatOfTheSharedDatasetsTrains) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  LORA_REQUIRE_SHARED("datasets/alpaca-subset/alpaca_5000.json");
  TempDir tmp("train");
  const auto ds = shared_dir() / "datasets";
  auto first_lines = [](const std::filesystem::path& src, const std::filesystem::path& dst, int n) {
    std::ifstream in(src);
    std::ofstream out(dst);
    std::string line;
    for (int i = 0; i < n && std::getline(in, line); ++i) out << line << "\n";
  };
  // text, prompt/completion: the first lines of each file.
  for (auto [name, folder] :
       {std::pair{"wikisql", "mlx-examples-wikisql"}, {"wwdc", "mlx-examples-wwdc25"}}) {
    std::filesystem::create_directories(tmp / name);
    first_lines(ds / folder / "train.jsonl", tmp / name / "train.jsonl", 8);
    first_lines(ds / folder / "valid.jsonl", tmp / name / "valid.jsonl", 4);
  }
  // instruction/input/output: Alpaca's JSON list as JSONL.
  std::filesystem::create_directories(tmp / "alpaca");
  auto alpaca = nlohmann::json::parse(read_file(ds / "alpaca-subset/alpaca_5000.json"));
  std::vector<nlohmann::json> rows(alpaca.begin(), alpaca.begin() + 12);
  write_jsonl(tmp / "alpaca/train.jsonl", {rows.begin(), rows.begin() + 8});
  write_jsonl(tmp / "alpaca/valid.jsonl", {rows.begin() + 8, rows.end()});
  // ShareGPT converted to messages (stories260K has no chat template: Llama-2 chat layout).
  std::filesystem::create_directories(tmp / "chat");
  auto conv = nlohmann::json::parse(read_file(ds / "axolotl-fixtures/conversation.json"));
  nlohmann::json messages = nlohmann::json::array();
  for (const auto& t : conv["conversations"]) {  // the first two exchanges keep the test short
    if (messages.size() == 4) break;
    messages.push_back(
        {{"role", t["from"] == "human" ? "user" : "assistant"}, {"content", t["value"]}});
  }
  write_jsonl(tmp / "chat/train.jsonl", {{{"messages", messages}}});
  write_jsonl(tmp / "chat/valid.jsonl", {{{"messages", messages}}});

  for (const char* name : {"wikisql", "wwdc", "alpaca", "chat"}) {
    auto args = with(base_args(tmp / (std::string(name) + "-out")),
                     {"--data", (tmp / name).string(), "--iters", "2", "--mask-prompt"});
    if (std::string(name) == "chat")
      args =
          with(args, {"--chat-format", "llama2", "--batch-size", "1", "--max-seq-length", "2048"});
    auto r = run_lora(args);
    EXPECT_EQ(r.exit_code, 0) << name << ": " << r.err;
    EXPECT_TRUE(
        std::filesystem::exists(tmp / (std::string(name) + "-out") / "adapters.safetensors"))
        << name;
  }
}

TEST(Train, BrokenInputsFailCleanlyWithoutAnAdapter) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("train");
  struct Case {
    const char* name;
    std::string train, valid;
    std::string expect;
  };
  const std::string ok = "{\"text\": \"Once upon a time there was a cat.\"}\n";
  const std::vector<Case> cases = {
      {"bad-json", ok + "{\"text\": \n", ok, "train.jsonl:2: invalid JSON"},
      {"missing-field", "{\"prompt\": \"p\"}\n", ok, "train.jsonl:1: missing field \"completion\""},
      {"wrong-type", ok + ok + "{\"text\": [1]}\n", ok,
       "train.jsonl:3: field \"text\" must be a string"},
      {"empty", "", ok, "train.jsonl: no records"},
      {"bad-utf8", "{\"text\": \"\xff\xfe\"}\n", ok, "train.jsonl:1: invalid JSON"},
      {"mixed", ok + "{\"prompt\": \"a\", \"completion\": \"b\"}\n", ok,
       "train.jsonl:2: record is in prompt/completion format"},
      {"bad-valid", ok, "{\"messages\": [{\"role\": \"user\"}]}\n",
       "valid.jsonl:1: messages[0]: missing field \"content\""},
      {"no-template", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", ok,
       "train.jsonl:1: a \"messages\" record needs a chat template"},
      {"long-line", ok + "{\"text\": \"" + std::string(5000, 'a') + "\"}\n", ok,
       "train.jsonl:2: line is longer than 1000 bytes"},
      {"missing-valid", ok, "", "valid.jsonl: file not found"},
  };
  for (const auto& c : cases) {
    const auto dir = tmp / c.name;
    std::filesystem::create_directories(dir);
    write_file(dir / "train.jsonl", c.train);
    if (!c.valid.empty()) write_file(dir / "valid.jsonl", c.valid);
    const auto out = tmp / (std::string(c.name) + "-out");
    auto r = run_lora(
        with(base_args(out), {"--data", dir.string(), "--iters", "2", "--max-line-bytes", "1000"}));
    EXPECT_EQ(r.exit_code, 1) << c.name;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.name << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(out)) << c.name << ": an adapter folder was written";
  }
}

TEST(Train, TestFileIsCheckedBeforeTrainingStarts) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("train");
  make_story_data(tmp / "data", 8, 4);
  // The adapter folder is made just before the first step: a run that trained before finding
  // the bad test file would leave it behind.
  const std::vector<std::string> test_run = {"--data", (tmp / "data").string(), "--iters", "2",
                                             "--test"};
  // No test.jsonl in the folder.
  auto r = run_lora(with(base_args(tmp / "out-missing"), test_run));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--test: no test.jsonl in the data folder"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "out-missing"));
  // A broken line in test.jsonl: named with its line, before training.
  write_file(tmp / "data/test.jsonl", "{\"text\": \"A fine line.\"}\n{\"text\": \n");
  r = run_lora(with(base_args(tmp / "out-broken"), test_run));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("test.jsonl:2: invalid JSON"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "out-broken"));
  // A record of another format than the file's first.
  write_file(tmp / "data/test.jsonl",
             "{\"text\": \"A fine line.\"}\n{\"prompt\": \"a\", \"completion\": \"b\"}\n");
  r = run_lora(with(base_args(tmp / "out-mixed"), test_run));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("test.jsonl:2:"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "out-mixed"));
  // A good test file: the run trains, then reports the test loss.
  write_file(tmp / "data/test.jsonl", "{\"text\": \"Once upon a time there was a cat.\"}\n");
  r = run_lora(with(base_args(tmp / "out-ok"),
                    {"--data", (tmp / "data").string(), "--iters", "2", "--test"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  bool saw_test = false;
  std::ifstream f(tmp / "out-ok/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j["type"] == "test") {
      saw_test = true;
      EXPECT_GT(j["loss"].get<double>(), 0.0);
      EXPECT_GT(j["tokens"].get<int64_t>(), 0);
    }
  }
  EXPECT_TRUE(saw_test);
}

TEST(Train, ConfigFilesAndPrintConfig) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("train");
  write_file(tmp / "c.json",
             "{\"model\": \"m\", \"learning_rate\": 0.003, \"lora_parameters\": {\"rank\": 4, "
             "\"keys\": [\"q_proj\", \"o_proj\"]}, \"mask_prompt\": true}");
  auto r =
      run_lora({"train", "--config", (tmp / "c.json").string(), "--rank", "6", "--print-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["learning_rate"], 0.003);
  EXPECT_EQ(j["rank"], 6);  // the command line wins
  EXPECT_EQ(j["lora_keys"], nlohmann::json({"q_proj", "o_proj"}));
  EXPECT_EQ(j["mask_prompt"], true);

  write_file(tmp / "c.toml", "model = \"m\"\nbatch_size = 2\n[lora_parameters]\nscale = 10.0\n");
  r = run_lora({"train", "--config", (tmp / "c.toml").string(), "--print-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["batch_size"], 2);
  EXPECT_EQ(j["scale"], 10.0);

  write_file(tmp / "bad.json", "{\"learning_rat\": 1}");
  r = run_lora({"train", "--config", (tmp / "bad.json").string(), "--print-config"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("unknown setting \"learning_rat\""), std::string::npos) << r.err;
}

}  // namespace
}  // namespace lora::test
