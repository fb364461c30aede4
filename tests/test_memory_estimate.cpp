// The memory estimate made before a run loads its model: the activation floor the benchmark
// measures peak RSS against, the LoRA parameter count and the base's bytes checked against the
// loaded objects, and the refusal of a run that cannot fit, whose suggested flags do fit.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/lora.h"
#include "trainer/memory_estimate.h"
#include "trainer/model.h"
#include "trainer/random_model.h"
#include "trainer/setting_error.h"
#include "trainer/train_memory.h"

namespace lora::test {
namespace {

namespace fs = std::filesystem;

ModelConfig small_config() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_layers = 5;
  c.num_heads = 8;
  c.num_kv_heads = 4;
  c.head_dim = 8;
  c.vocab_size = 512;
  return c;
}

TEST(MemoryEstimate, ActivationFloorCountsEachKeptTensor) {
  const ModelConfig c = small_config();
  // Per block and token: 4 x hidden (input, its norm, the residual and its norm), q and attention
  // output (2 x 64), k and v (2 x 32), gate, up and their product (3 x 172).
  const uint64_t block = 4 * 64 + 2 * 64 + 2 * 32 + 3 * 172;
  EXPECT_EQ(activation_bytes(c, 100, false), (5 * block + 64) * 100 * 4);
  EXPECT_EQ(activation_bytes(c, 100, true), (5 * 64 + block) * 100 * 4);
}

TEST(MemoryEstimate, LoraCountAndBaseBytesMatchTheLoadedObjects) {
  const ModelConfig c = small_config();
  const Model model = make_random_model(c, 3);
  LoraConfig lc;
  lc.rank = 4;
  lc.num_layers = 2;
  lc.keys = {Proj::q, Proj::k, Proj::o, Proj::down};
  EXPECT_EQ(lora_parameter_count(c, 4, lc.keys, 2),
            LoraAdapter::create(model, lc, 1).num_parameters());
  lc.num_layers = -1;
  EXPECT_EQ(lora_parameter_count(c, 4, lc.keys, -1),
            LoraAdapter::create(model, lc, 1).num_parameters());

  LORA_REQUIRE_SHARED(kStoriesModel);
  const fs::path stories = shared_dir() / kStoriesModel;
  EXPECT_EQ(base_bytes_of(stories), load_model(stories).stored_bytes());
  LoadOptions q4;
  q4.quantize_bits = 4;
  q4.quantize_group_size = 32;
  EXPECT_EQ(base_bytes_of(stories, 4, 32), load_model(stories, q4).stored_bytes());
}

// A bf16 base quantized at load, and one quantized on disk with bf16 scales: the scales and biases
// are held as f32 either way, and both counts say so.
TEST(MemoryEstimate, BaseBytesCountScalesAsHeldFromABf16Base) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("memory-bf16");
  const fs::path stories = shared_dir() / kStoriesModel;
  for (const auto& [out, flags] : std::vector<std::pair<fs::path, std::vector<std::string>>>{
           {tmp / "bf16", {"--dtype", "bf16"}},
           {tmp / "q4", {"--dtype", "bf16", "--quantize", "4", "--q-group-size", "32"}}}) {
    std::vector<std::string> args = {"convert", "--model", stories.string(), "--out", out.string()};
    args.insert(args.end(), flags.begin(), flags.end());
    const auto r = run_lora(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  LoadOptions q4;
  q4.quantize_bits = 4;
  q4.quantize_group_size = 32;
  const Model at_load = load_model(tmp / "bf16", q4);
  const Model on_disk = load_model(tmp / "q4");
  EXPECT_EQ(base_bytes_of(tmp / "bf16", 4, 32), at_load.stored_bytes());
  EXPECT_EQ(base_bytes_of(tmp / "q4"), on_disk.stored_bytes());
  // The same weights held the same way, whichever way they were quantized.
  EXPECT_EQ(at_load.stored_bytes(), on_disk.stored_bytes());
  // A bf16-scaled projection counts its scales and biases at the f32 width they are held in.
  const FrozenWeight& q = on_disk.layers[0].at(Proj::q);
  ASSERT_EQ(q.format, WeightFormat::Quantized);
  EXPECT_EQ(q.quant.scale_dtype, DType::BF16);
  EXPECT_EQ(q.stored_bytes(), q.quant.packed.size() * sizeof(uint32_t) +
                                  (q.quant.scales.size() + q.quant.biases.size()) * sizeof(float));
}

std::vector<std::string> train_args(const fs::path& data, const fs::path& out) {
  return stories_train_args(
      data, out,
      {"--batch-size", "8", "--max-seq-length", "64", "--num-layers", "5", "--iters", "1",
       "--steps-per-eval", "0", "--val-batches", "0", "--save-every", "0"});
}

CommandResult run_with_memory(const std::string& bytes, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"env", "LORA_AVAILABLE_MEMORY=" + bytes, lora_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

// stories260K with batches of 8 of its longest example (about 40 tokens): 1 MiB of base and about
// 6 MiB of activations, 1.6 MiB with --grad-checkpoint. With 4 MiB available the run is refused
// before the model is loaded and before the adapter folder exists, naming --grad-checkpoint; with
// that flag it runs.
TEST(MemoryEstimate, RunThatCannotFitIsRefusedNamingFlagsThatFit) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("memory");
  make_story_data(tmp / "data");
  const auto args = train_args(tmp / "data", tmp / "out");
  const std::string four_mib = std::to_string(4 << 20);
  auto r = run_with_memory(four_mib, args);
  ASSERT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.err.find("needs about"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("4 MiB are available"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--grad-checkpoint"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--batch-size 2"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "out"));

  auto fixed = args;
  fixed.push_back("--grad-checkpoint");
  auto ok = run_with_memory(four_mib, fixed);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  auto small = args;
  small.insert(small.end(), {"--batch-size", "2"});
  EXPECT_EQ(run_with_memory(four_mib, small).exit_code, 0);
  // Nothing fits in 256 KiB (the base alone is 1 MiB, about 280 KiB quantized to 4 bits).
  auto none = run_with_memory(std::to_string(256 << 10), args);
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("no smaller batch"), std::string::npos) << none.err;
}

// The library's refusal carries the changes that fit as settings (the CLI above spells them as
// flags): grad_checkpoint alone, batch_size 2; its text names no flag.
TEST(MemoryEstimate, RefusalAdvisesSettingsNotFlags) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TrainOptions o;
  o.model = (shared_dir() / kStoriesModel).string();
  o.batch_size = 8;
  o.num_layers = 5;
  try {
    check_run_fits(o, 40, 4 << 20);
    FAIL() << "4 MiB fits";
  } catch (const AdvisedError& e) {
    EXPECT_EQ(std::string(e.what()).find("--"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("it fits with grad_checkpoint, or batch_size 2"),
              std::string::npos)
        << e.what();
    ASSERT_GE(e.alternatives().size(), 2u);
    EXPECT_EQ(e.alternatives()[0].size(), 1u);
    EXPECT_EQ(e.alternatives()[0][0].setting, "grad_checkpoint");
    EXPECT_EQ(e.alternatives()[0][0].value, "");
    EXPECT_EQ(e.alternatives()[1][0].setting, "batch_size");
    EXPECT_EQ(e.alternatives()[1][0].value, "2");
  }
  EXPECT_NO_THROW(check_run_fits(o, 40, uint64_t(1) << 30));
}

// Runs `args` with build/lora, its output into `log`; the child's peak RSS in bytes (wait4).
uint64_t peak_rss_of_lora(const std::vector<std::string>& args, const fs::path& log) {
  std::vector<std::string> argv = {lora_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage usage {};
  EXPECT_EQ(::wait4(pid, &status, 0, &usage), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << read_file(log);
  return uint64_t(usage.ru_maxrss) * 1024;  // Linux: KiB
}

// A run whose activations dominate (stories260K, batches of 8 x 512 tokens: 75 MiB of them
// without checkpointing, 17 MiB with): the peak RSS measured by the kernel lies within
// kEstimateMargin of the estimate the run prints before loading the model.
TEST(MemoryEstimate, MeasuredPeakIsWithinTheMarginOfTheEstimate) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "ASan's shadow memory and quarantine are not the trainer's";
#endif
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("memory");
  fs::create_directories(tmp / "data");
  std::string story;
  for (const auto& s : story_sentences()) story += s + " ";
  std::vector<nlohmann::json> rows;
  for (int i = 0; i < 16; ++i) rows.push_back({{"text", story.substr(std::size_t(i) * 40)}});
  write_jsonl(tmp / "data/train.jsonl", rows);
  for (bool checkpoint : {false, true}) {
    auto args = stories_train_args(
        tmp / "data", tmp / "out",
        {"--batch-size", "8", "--max-seq-length", "512", "--num-layers", "5", "--iters", "1",
         "--steps-per-eval", "0", "--val-batches", "0", "--save-every", "0"});
    if (checkpoint) args.push_back("--grad-checkpoint");
    const uint64_t peak = peak_rss_of_lora(args, tmp / "log.txt");
    const std::string log = read_file(tmp / "log.txt");
    const std::string key = "peak memory estimate ";
    const auto at = log.find(key);
    ASSERT_NE(at, std::string::npos) << log;
    ASSERT_NE(log.find("batches of 8 x 512 tokens"), std::string::npos) << log;
    const double estimate = std::stod(log.substr(at + key.size())) * (1 << 20);
    EXPECT_GT(double(peak), estimate * (1 - kEstimateMargin))
        << "checkpointing " << checkpoint << ": " << log;
    EXPECT_LT(double(peak), estimate * (1 + kEstimateMargin))
        << "checkpointing " << checkpoint << ": " << log;
    std::printf("checkpointing %d: peak RSS %.1f MiB, estimate %.0f MiB (%s)\n", int(checkpoint),
                double(peak) / (1 << 20), estimate / (1 << 20), log.substr(at, 120).c_str());
    fs::remove_all(tmp / "out");
  }
}

TEST(MemoryEstimate, PrintConfigShowsTheEstimate) {
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("memory");
  auto r = run_lora({"train", "--model", (shared_dir() / kStoriesModel).string(), "--batch-size",
                     "8", "--max-seq-length", "64", "--print-config"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NO_THROW(nlohmann::json::parse(r.out));  // stdout stays a config file
  EXPECT_NE(r.err.find("memory estimate for batches of 8 x 64 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("with --grad-checkpoint"), std::string::npos) << r.err;
  EXPECT_GT(available_memory_bytes().value_or(0), 0u);
}

}  // namespace
}  // namespace lora::test
