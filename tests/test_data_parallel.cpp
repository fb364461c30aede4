// Data-parallel training under mpirun: 2 ranks against 1 process with the same global batch
// (losses within 1e-6 relative, the adapter within 1e-5; bit-identical with
// --deterministic-reduction), a rank killed with SIGKILL or stopped (the job ends within seconds
// with a message) and resumes on 1 or 2 ranks bit-identically. The split of a step among ranks
// and of a batch into parts are checked directly. Without MPI in the build or mpirun on the
// machine, the MPI tests skip with a message.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <map>

#include "support/test_support.h"
#include "train_fixtures.h"
#include "trainer/data_parallel.h"
#include "trainer/distributed.h"
#include "trainer/io/safetensors.h"

namespace lora::test {
namespace {

namespace fs = std::filesystem;

TEST(DataParallel, EveryMicroBatchIsCoveredOnce) {
  for (int64_t m = 1; m <= 9; ++m)
    for (int n = 1; n <= 7; ++n) {
      std::map<int64_t, std::vector<BatchShare>> by_micro;
      for (int r = 0; r < n; ++r) {
        const auto shares = shares_of_rank(m, r, n);
        EXPECT_FALSE(shares.empty()) << m << " micro-batches, rank " << r << " of " << n;
        for (const auto& s : shares) by_micro[s.micro].push_back(s);
      }
      ASSERT_EQ(int64_t(by_micro.size()), m) << m << " micro-batches on " << n << " ranks";
      for (const auto& [micro, shares] : by_micro) {
        // Whole when there are enough micro-batches; else parts 0..k-1 of k.
        EXPECT_EQ(int64_t(shares.size()), shares[0].parts) << micro;
        for (std::size_t i = 0; i < shares.size(); ++i) EXPECT_EQ(shares[i].part, int64_t(i));
        if (m >= n) {
          EXPECT_EQ(shares[0].parts, 1);
        }
      }
    }
}

TEST(DataParallel, BatchPartsSplitTheExamples) {
  std::vector<data::Example> examples;
  for (int i = 0; i < 7; ++i) {
    data::Example e;
    e.ids.assign(std::size_t(3 + i), 5);
    e.trained.assign(e.ids.size(), 1);
    examples.push_back(e);
  }
  const data::BatchPlan plan(examples, 7, 1, false);
  const data::Batch whole = plan.group(0);
  int64_t rows = 0, trained = 0;
  for (int64_t p = 0; p < 3; ++p) {
    const data::Batch part = plan.group(0, p, 3);
    rows += part.batch;
    trained += part.trained_tokens;
  }
  EXPECT_EQ(rows, whole.batch);
  EXPECT_EQ(trained, whole.trained_tokens);
  EXPECT_EQ(plan.group(0, 0, 9).batch, 0);  // more parts than examples: some are empty
}

TEST(DataParallel, LauncherEnvironmentIsDetected) {
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  ::unsetenv("PMI_SIZE");
  ::unsetenv("PMIX_SIZE");
  ::unsetenv("PMIX_RANK");
  ::unsetenv("SLURM_STEP_NUM_TASKS");
  EXPECT_EQ(launcher_world_size(), 1);
  ::setenv("PMIX_RANK", "3", 1);
  EXPECT_GT(launcher_world_size(), 1);
  ::unsetenv("PMIX_RANK");
  ::setenv("OMPI_COMM_WORLD_SIZE", "4", 1);
  EXPECT_EQ(launcher_world_size(), 4);
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
}

TEST(DataParallel, BuildWithoutMpiRefusesToRunUnderALauncher) {
  if (built_with_mpi()) GTEST_SKIP() << "this build has MPI (the refusal is for builds without)";
  LORA_REQUIRE_SHARED(kStoriesModel);
  TempDir tmp("dp");
  make_story_data(tmp / "data");
  ::setenv("OMPI_COMM_WORLD_SIZE", "2", 1);
  auto r = run_lora({"--threads", "1", "train", "--model", (shared_dir() / kStoriesModel).string(),
                     "--data", (tmp / "data").string(), "--adapter-path", (tmp / "a").string(),
                     "--iters", "1"});
  ::unsetenv("OMPI_COMM_WORLD_SIZE");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("this build has no MPI"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "a"));
}

bool have_mpirun() { return run_program({"mpirun", "--version"}).exit_code == 0; }

#define LORA_REQUIRE_MPI()                                                               \
  do {                                                                                   \
    if (!built_with_mpi())                                                               \
      GTEST_SKIP() << "this build has no MPI (install libopenmpi-dev and reconfigure)";  \
    if (!have_mpirun()) GTEST_SKIP() << "mpirun not found (Debian package openmpi-bin)"; \
    LORA_REQUIRE_SHARED(kStoriesModel);                                                  \
  } while (0)

std::vector<std::string> train_args(const fs::path& data, const fs::path& out,
                                    const std::string& accumulation) {
  return stories_train_args(data, out,
                            {"--iters",
                             "12",
                             "--batch-size",
                             "2",
                             "--grad-accumulation-steps",
                             accumulation,
                             "--max-seq-length",
                             "32",
                             "--learning-rate",
                             "2e-3",
                             "--optimizer",
                             "adamw",
                             "--grad-clip",
                             "1.0",
                             "--steps-per-report",
                             "1",
                             "--steps-per-eval",
                             "5",
                             "--val-batches",
                             "3",
                             "--save-every",
                             "6",
                             "--num-layers",
                             "3",
                             "--lora-keys",
                             "q_proj,v_proj,down_proj",
                             "--seed",
                             "7"});
}

// In a sanitizer build, no leak check in the ranks: Open MPI unloads its components before the
// check runs, so their allocations kept past MPI_Finalize cannot be told from ours (the
// single-process tests check ours).
std::string asan_options_for_ranks() {
  const char* set = std::getenv("ASAN_OPTIONS");
  return "ASAN_OPTIONS=" + std::string(set != nullptr && *set ? std::string(set) + ":" : "") +
         "detect_leaks=0";
}

// mpirun as the tests run it (as root, more ranks than cores); users never need these flags.
CommandResult run_ranks(int ranks, std::vector<std::string> args) {
  std::vector<std::string> argv = {
      "mpirun",
      "--allow-run-as-root",
      "--oversubscribe",
      "-x",
      asan_options_for_ranks(),
      "-x",
      "LORA_FAULT_RANK",
      "-x",
      "LORA_FAULT_SIGNAL_AT_STEP",
      "-np",
      std::to_string(ranks),
      std::getenv("LORA_BIN") ? std::getenv("LORA_BIN") : LORA_BINARY_DIR "/lora"};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

// Fault injection into one rank: raise `sig` after optimizer step `step`.
class FaultOnRank {
 public:
  FaultOnRank(int rank, int step, int sig) {
    ::setenv("LORA_FAULT_RANK", std::to_string(rank).c_str(), 1);
    ::setenv("LORA_FAULT_SIGNAL_AT_STEP",
             (std::to_string(step) + ":" + std::to_string(sig)).c_str(), 1);
  }
  ~FaultOnRank() {
    ::unsetenv("LORA_FAULT_RANK");
    ::unsetenv("LORA_FAULT_SIGNAL_AT_STEP");
  }
};

struct LoggedLoss {
  std::string key;  // type@step
  double loss;
};
std::vector<LoggedLoss> losses_of(const fs::path& run) {
  std::vector<LoggedLoss> out;
  std::istringstream lines(read_file(run / "metrics.jsonl"));
  std::string line;
  while (std::getline(lines, line)) {
    auto j = nlohmann::json::parse(line);
    out.push_back({j["type"].get<std::string>() + "@" + j["step"].dump(), j["loss"].get<double>()});
  }
  return out;
}

void expect_close_runs(const fs::path& a, const fs::path& b, double loss_tol, double adapter_tol) {
  const auto la = losses_of(a), lb = losses_of(b);
  ASSERT_EQ(la.size(), lb.size());
  EXPECT_GT(la.size(), 12u);
  for (std::size_t i = 0; i < la.size(); ++i) {
    EXPECT_EQ(la[i].key, lb[i].key);
    EXPECT_LE(std::abs(la[i].loss - lb[i].loss), loss_tol * std::abs(la[i].loss)) << la[i].key;
  }
  // Per tensor, relative in the L2 norm (Adam's normalized steps make single tiny entries
  // differ more).
  const auto fa = SafetensorsFile::open(a / "adapters.safetensors");
  const auto fb = SafetensorsFile::open(b / "adapters.safetensors");
  ASSERT_EQ(fa.tensors().size(), fb.tensors().size());
  for (const auto& t : fa.tensors()) {
    const auto va = fa.read_f32(t.name), vb = fb.read_f32(t.name);
    ASSERT_EQ(va.size(), vb.size());
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < va.size(); ++i) {
      diff += (double(va[i]) - vb[i]) * (double(va[i]) - vb[i]);
      norm += double(va[i]) * va[i];
    }
    EXPECT_LE(std::sqrt(diff), adapter_tol * std::sqrt(norm)) << t.name;
  }
}

void expect_identical_runs(const fs::path& a, const fs::path& b) {
  EXPECT_EQ(read_file(a / "adapters.safetensors"), read_file(b / "adapters.safetensors"));
  EXPECT_EQ(logged_losses(a / "metrics.jsonl"), logged_losses(b / "metrics.jsonl"));
}

TEST(DataParallel, TwoRanksMatchOneProcess) {
  LORA_REQUIRE_MPI();
  TempDir tmp("dp");
  make_story_data(tmp / "data");
  // Global batch 4 micro-batches x 2 examples: rank 0 sums micro-batches 0+1, rank 1 2+3, and
  // the all-reduce adds those two sums; one process adds the four in order. Only that float
  // summation order differs.
  auto one = run_lora(train_args(tmp / "data", tmp / "one", "4"));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto two = run_ranks(2, train_args(tmp / "data", tmp / "two", "4"));
  ASSERT_EQ(two.exit_code, 0) << two.err << two.out;
  EXPECT_NE(two.out.find("data-parallel on MPI, 2 ranks"), std::string::npos) << two.out;
  expect_close_runs(tmp / "one", tmp / "two", 1e-6, 1e-5);
  EXPECT_NE(read_file(tmp / "one/adapters.safetensors"),
            read_file(tmp / "two/adapters.safetensors"))
      << "expected the summation order to show (else this test checks nothing)";

  auto ordered = train_args(tmp / "data", tmp / "ordered", "4");
  ordered.push_back("--deterministic-reduction");
  auto det = run_ranks(2, ordered);
  ASSERT_EQ(det.exit_code, 0) << det.err;
  expect_identical_runs(tmp / "one", tmp / "ordered");
  // Only rank 0 writes: one metrics line per report, no stray files from the other rank.
  EXPECT_EQ(losses_of(tmp / "ordered").size(), losses_of(tmp / "one").size());
}

TEST(DataParallel, RanksSplittingOneBatchStayClose) {
  LORA_REQUIRE_MPI();
  TempDir tmp("dp");
  make_story_data(tmp / "data");
  // 3 ranks, 2 micro-batches: ranks 0 and 1 share micro-batch 0 (one example each), rank 2 takes
  // micro-batch 1. The shared batch is padded and multiplied in other shapes, so only closeness
  // holds (no dropout: its masks are drawn per batch shape).
  auto args = [&](const char* out) { return train_args(tmp / "data", tmp / out, "2"); };
  auto one = run_lora(args("one"));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  auto three = run_ranks(3, args("three"));
  ASSERT_EQ(three.exit_code, 0) << three.err;
  expect_close_runs(tmp / "one", tmp / "three", 1e-5, 1e-4);
}

// The story data and an uninterrupted 2-rank run in tmp/straight, to compare interrupted ones with.
void make_data_and_straight_run(const TempDir& tmp) {
  make_story_data(tmp / "data");
  auto straight = run_ranks(2, train_args(tmp / "data", tmp / "straight", "2"));
  ASSERT_EQ(straight.exit_code, 0) << straight.err;
}

TEST(DataParallel, KilledRankEndsTheJobAndResumesOnOneOrTwoRanks) {
  LORA_REQUIRE_MPI();
  TempDir tmp("dp");
  ASSERT_NO_FATAL_FAILURE(make_data_and_straight_run(tmp));
  {
    FaultOnRank kill(1, 8, SIGKILL);  // rank 1 dies 2 steps after the step-6 checkpoint
    const auto t0 = std::chrono::steady_clock::now();
    auto killed = run_ranks(2, train_args(tmp / "data", tmp / "killed", "2"));
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(killed.exit_code, 0);
    EXPECT_LT(secs, 30.0);
    const std::string all = killed.out + killed.err;
    EXPECT_NE(all.find("rank 1"), std::string::npos) << all;
    EXPECT_NE(all.find("signal 9"), std::string::npos) << all;
  }
  EXPECT_FALSE(fs::exists(tmp / "killed/adapters.safetensors"));
  const fs::path ckpt = tmp / "killed/checkpoints/step-00000006";
  ASSERT_TRUE(fs::exists(ckpt / "state.json"));
  for (int ranks : {1, 2}) {
    const fs::path out = tmp / ("resumed-" + std::to_string(ranks));
    std::vector<std::string> args = {
        "--threads", "1", "train", "--resume", ckpt.string(), "--adapter-path", out.string()};
    auto resumed = ranks == 1 ? run_lora(args) : run_ranks(ranks, args);
    ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
    expect_identical_runs(tmp / "straight", out);
  }
}

TEST(DataParallel, SignalOnOneRankStopsEveryRankAfterTheSameStep) {
  LORA_REQUIRE_MPI();
  TempDir tmp("dp");
  ASSERT_NO_FATAL_FAILURE(make_data_and_straight_run(tmp));
  {
    FaultOnRank interrupt(1, 8, SIGINT);  // only rank 1 sees it; the ranks agree on stopping
    auto stopped = run_ranks(2, train_args(tmp / "data", tmp / "stopped", "2"));
    EXPECT_NE(stopped.exit_code, 0);
    EXPECT_NE(stopped.err.find("stopped by a signal after step 8"), std::string::npos)
        << stopped.err;
  }
  const fs::path ckpt = tmp / "stopped/checkpoints/step-00000008";
  ASSERT_TRUE(fs::exists(ckpt / "state.json"));
  auto resumed = run_ranks(2, {"--threads", "1", "train", "--resume", ckpt.string()});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  expect_identical_runs(tmp / "straight", tmp / "stopped");
}

TEST(DataParallel, StuckRankEndsTheJobWithAMessage) {
  LORA_REQUIRE_MPI();
  TempDir tmp("dp");
  make_story_data(tmp / "data");
  FaultOnRank stop(1, 8, SIGSTOP);  // rank 1 stops answering (the process stays)
  auto args = train_args(tmp / "data", tmp / "stuck", "2");
  args.insert(args.end(), {"--collective-timeout", "2"});
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_ranks(2, args);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(secs, 30.0);
  EXPECT_NE(r.err.find("rank 0 of 2: the stop-signal exchange found no answer from the other "
                       "ranks for 2 s: a rank has died or hangs"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(fs::exists(tmp / "stuck/checkpoints/step-00000006/state.json"));
}

}  // namespace
}  // namespace lora::test
