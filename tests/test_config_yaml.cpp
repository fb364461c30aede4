// `lora train --config` with mlx-lm's own YAML: its examples/lora_config.yaml (every documented
// key, written out here with a local model and data) trains as it is; lr_schedule, optimizer_config
// and lora_parameters map onto this trainer's settings; keys that would change the run and have
// no equal here are refused by name, harmless ones are warned about. TOML and JSON still read.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_support.h"
#include "train_fixtures.h"

namespace lora::test {
namespace {

// mlx-lm's examples/lora_config.yaml, key for key and value for value, but for the model, data
// and adapter folders.
std::string mlx_lm_example(const std::string& model, const std::string& data,
                           const std::string& adapters, const std::string& extra = "") {
  return "# A model folder or Hugging Face repo.\n"
         "model: \"" +
         model +
         "\"\n"
         "train: true\n"
         "fine_tune_type: lora\n"
         "training_mode: normal\n"
         "optimizer: adamw\n"
         "# optimizer_config:\n"
         "#   adamw:\n"
         "#     weight_decay: 0.05\n"
         "data: \"" +
         data +
         "\"\n"
         "seed: 0\n"
         "num_layers: 16\n"
         "batch_size: 4\n"
         "iters: 1000\n"
         "val_batches: 25\n"
         "learning_rate: 1e-5\n"
         "steps_per_report: 10\n"
         "steps_per_eval: 200\n"
         "resume_adapter_file: null\n"
         "adapter_path: \"" +
         adapters +
         "\"\n"
         "save_every: 100\n"
         "test: false\n"
         "test_batches: 100\n"
         "max_seq_length: 2048\n"
         "grad_checkpoint: false\n"
         "lora_parameters:\n"
         "  keys: [\"self_attn.q_proj\", \"self_attn.v_proj\"]\n"
         "  rank: 8\n"
         "  scale: 20.0\n"
         "  dropout: 0.0\n" +
         extra;
}

struct ConfigFolder {
  TempDir tmp{"yaml"};
  std::string model = (shared_dir() / kStoriesModel).string();
  std::string data = (tmp / "data").string();
  std::string adapters = (tmp / "adapters").string();
  std::string config(const std::string& name, const std::string& text) const {
    write_file(tmp / name, text);
    return (tmp / name).string();
  }
};

// `text` with the top-level `key: value` line(s) of `extra` in place of its own (a YAML mapping
// may not repeat a key).
std::string with_key(std::string text, const std::string& extra) {
  const std::string key = extra.substr(0, extra.find(':'));
  if (auto at = text.find("\n" + key + ":"); at != std::string::npos)
    text.erase(at + 1, text.find('\n', at + 1) - at);
  return text + extra;
}

nlohmann::json print_config(const std::string& config) {
  const CommandResult r = run_lora({"train", "--config", config, "--print-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
}

TEST(ConfigYaml, MlxLmExampleTrainsAsItIs) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  LORA_REQUIRE_SHARED(kStoriesText);
  ConfigFolder s;
  make_story_data(s.data, 24, 8);
  const std::string config =
      s.config("lora_config.yaml", mlx_lm_example(s.model, s.data, s.adapters));
  const nlohmann::json j = print_config(config);
  EXPECT_EQ(j["optimizer"], "adamw");
  EXPECT_DOUBLE_EQ(j["learning_rate"].get<double>(), 1e-5);
  EXPECT_EQ(j["test_batches"], 100);
  EXPECT_EQ(j["rank"], 8);
  EXPECT_DOUBLE_EQ(j["scale"].get<double>(), 20.0);
  EXPECT_EQ(j["lora_keys"], nlohmann::json({"self_attn.q_proj", "self_attn.v_proj"}));
  EXPECT_EQ(j["train_file"], "");  // train: true is the switch, not a file
  EXPECT_EQ(j["resume_adapter_file"], "");

  // The file as it is; only the run's length is cut down on the command line.
  const CommandResult r =
      run_lora({"--threads", "1", "train", "--config", config, "--iters", "4", "--steps-per-eval",
                "4", "--save-every", "0", "--val-batches", "2", "--max-seq-length", "64"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(s.adapters) / "adapters.safetensors"));
  const auto adapter_config =
      nlohmann::json::parse(read_file(std::filesystem::path(s.adapters) / "adapter_config.json"));
  EXPECT_EQ(adapter_config["lora_parameters"]["rank"], 8) << adapter_config.dump();
  EXPECT_EQ(adapter_config["optimizer"], "adamw");
}

TEST(ConfigYaml, LrScheduleMappingBecomesTheSchedule) {
  ConfigFolder s;
  const std::string config =
      s.config("schedule.yaml", mlx_lm_example(s.model, s.data, s.adapters,
                                               "lr_schedule:\n"
                                               "  name: cosine_decay\n"
                                               "  warmup: 100\n"
                                               "  warmup_init: 1e-7\n"
                                               "  arguments: [2e-5, 1000, 1e-7]\n"
                                               "optimizer_config:\n"
                                               "  adamw:\n"
                                               "    weight_decay: 0.05\n"));
  const CommandResult r = run_lora({"train", "--config", config, "--print-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["lr_schedule"], "cosine");
  EXPECT_DOUBLE_EQ(j["learning_rate"].get<double>(), 2e-5);  // the schedule's peak wins
  EXPECT_EQ(j["warmup"], 100);
  EXPECT_NEAR(j["warmup_init"].get<double>(), 1e-7 / 2e-5, 1e-12);  // a fraction here
  EXPECT_DOUBLE_EQ(j["weight_decay"].get<double>(), 0.05);
  // What differs from MLX's schedule is said, not silently changed.
  EXPECT_NE(r.err.find("lr_schedule: the decay ends at 0 here, not at 1e-7"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("over the 900 steps from the end of warmup to iters here, not over 1000"),
            std::string::npos)
      << r.err;

  // The command line still overrides the file.
  const CommandResult cli =
      run_lora({"train", "--config", config, "--learning-rate", "3e-4", "--print-config"});
  ASSERT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(cli.out)["learning_rate"].get<double>(), 3e-4);
}

TEST(ConfigYaml, UnsupportedKeysAreRefusedByNameHarmlessOnesWarned) {
  ConfigFolder s;
  const std::string base = mlx_lm_example(s.model, s.data, s.adapters);
  const std::vector<std::pair<std::string, std::string>> refused = {
      {"training_mode: dpo\n", "training_mode: \"dpo\" is not supported"},
      {"lr_schedule:\n  name: exponential_decay\n  arguments: [1e-5, 0.9]\n",
       "lr_schedule.name: \"exponential_decay\" is not supported"},
      {"optimizer_config:\n  adamw:\n    betas: [0.9, 0.98]\n",
       "optimizer_config.adamw.betas: not supported"},
      {"hf_dataset:\n  name: billsum\n", "hf_dataset: not supported"},
      {"mystery_knob: 3\n", "unknown setting \"mystery_knob\""},
  };
  for (const auto& [extra, expect] : refused) {
    const CommandResult r = run_lora(
        {"train", "--config", s.config("bad.yaml", with_key(base, extra)), "--print-config"});
    EXPECT_NE(r.exit_code, 0) << extra;
    EXPECT_NE(r.err.find("bad.yaml: " + expect), std::string::npos) << extra << r.err;
  }
  // fine_tune_type is a setting (lora, dora or full).
  EXPECT_EQ(print_config(
                s.config("full.yaml", with_key(base, "fine_tune_type: full\n")))["fine_tune_type"],
            "full");
  EXPECT_EQ(print_config(
                s.config("dora.yaml", with_key(base, "fine_tune_type: dora\n")))["fine_tune_type"],
            "dora");

  const CommandResult warned = run_lora(
      {"train", "--config", s.config("warn.yaml", base + "report_to: wandb\n"), "--print-config"});
  EXPECT_EQ(warned.exit_code, 0) << warned.err;
  EXPECT_NE(warned.err.find("lora: warning: "), std::string::npos) << warned.err;
  EXPECT_NE(warned.err.find("report_to: ignored"), std::string::npos) << warned.err;
}

TEST(ConfigYaml, TomlAndJsonStillRead) {
  ConfigFolder s;
  nlohmann::json j = print_config(s.config("c.toml",
                                           "model = \"m\"\ndata = \"d\"\nlearning-rate = 2e-4\n"
                                           "[lora_parameters]\nrank = 4\nkeys = [\"q_proj\"]\n"));
  EXPECT_EQ(j["rank"], 4);
  EXPECT_EQ(j["lora_keys"], nlohmann::json({"q_proj"}));
  EXPECT_DOUBLE_EQ(j["learning_rate"].get<double>(), 2e-4);
  j = print_config(s.config("c.json", R"({"model": "m", "train": "t.jsonl", "rank": 3})"));
  EXPECT_EQ(j["rank"], 3);
  EXPECT_EQ(j["train_file"], "t.jsonl");  // this CLI's older file form of "train"
}

}  // namespace
}  // namespace lora::test
