// scripts/bench_train.py's baseline rules, on its smoke form (--quick: 2 layers, 4 x 128 tokens):
// neither side inherits the environment's OpenBLAS kernel choice, both report the kernels they
// ran, PyTorch runs on TCMalloc where it is installed, and the ratio comes with all of that.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "support/test_support.h"

namespace lora {
namespace {

namespace fs = std::filesystem;
using namespace std::string_literals;

nlohmann::json quick_bench(const std::vector<std::string>& env,
                           const std::vector<std::string>& more, const fs::path& out) {
  std::vector<std::string> argv = {"env"};
  argv.insert(argv.end(), env.begin(), env.end());
  for (const std::string& a :
       {test::torch_python(), std::string(LORA_SOURCE_DIR) + "/scripts/bench_train.py", "--quick"s,
        "--rounds"s, "1"s, "--steps"s, "1"s, "--build"s, std::string(LORA_BINARY_DIR), "--out"s,
        out.string()})
    argv.push_back(a);
  argv.insert(argv.end(), more.begin(), more.end());
  const auto r = test::run_program(argv);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  return nlohmann::json::parse(test::read_file(out));
}

std::set<std::string> cores(const nlohmann::json& side) {
  std::set<std::string> out;
  for (const auto& run : side["runs"])
    out.insert(run.contains("blas_core") ? run["blas_core"].get<std::string>()
                                         : run["cpu"]["blas_core"].get<std::string>());
  return out;
}

TEST(BenchTrain, BothSidesRunTheCpusOwnOpenBlasKernelsAndTorchOnTcmalloc) {
  LORA_REQUIRE_TORCH();
  test::TempDir tmp("bench-train");
  const auto j = quick_bench({"OPENBLAS_CORETYPE=Haswell"}, {}, tmp / "own.json");
  EXPECT_EQ(j["inherited_caps_dropped"], (nlohmann::json{{"OPENBLAS_CORETYPE", "Haswell"}}));
  const auto& c = j["configs"][0];
  ASSERT_TRUE(c["no_ratio_because"].is_null()) << c["no_ratio_because"];
  EXPECT_GT(c["ratio_vs_torch"].get<double>(), 0.0);
  EXPECT_EQ(cores(c["ours"]), cores(c["torch"]));
  if (detect_cpu_features().avx512) {
    EXPECT_EQ(cores(c["ours"]).count("Haswell"), 0u);
  }
  const bool tcmalloc = fs::exists("/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4");
  EXPECT_EQ(j["torch_allocator"], tcmalloc ? "tcmalloc" : "glibc malloc");
  for (const auto& run : c["torch"]["runs"])
    EXPECT_EQ(run["allocator"], tcmalloc ? "tcmalloc" : "glibc malloc");
}

// --env sets a kernel choice on purpose, for both sides; --torch-malloc glibc keeps plain malloc.
TEST(BenchTrain, EnvSetsTheKernelsForBothSides) {
  LORA_REQUIRE_TORCH();
  test::TempDir tmp("bench-train-env");
  const auto j = quick_bench({}, {"--env", "OPENBLAS_CORETYPE=Haswell", "--torch-malloc", "glibc"},
                             tmp / "haswell.json");
  EXPECT_TRUE(j["inherited_caps_dropped"].empty()) << j["inherited_caps_dropped"];
  const auto& c = j["configs"][0];
  ASSERT_TRUE(c["no_ratio_because"].is_null()) << c["no_ratio_because"];
  EXPECT_EQ(cores(c["ours"]), std::set<std::string>{"Haswell"});
  EXPECT_EQ(cores(c["torch"]), std::set<std::string>{"Haswell"});
  EXPECT_EQ(j["torch_allocator"], "glibc malloc");
}

}  // namespace
}  // namespace lora
