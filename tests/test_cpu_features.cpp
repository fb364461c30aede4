// The CPU feature module (detection, the LORA_CPU cap) and the per-instruction-set kernel copies:
// every copy this machine can run gives the same results on the same inputs, and the CLI under
// LORA_CPU=avx2 reports the cap and trains like the full path.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/dtype.h"
#include "autograd/gguf_quant.h"
#include "autograd/kernels/gguf_dequant_isa.h"
#include "autograd/kernels/kernel_variants.h"
#include "autograd/kernels/kernels_activation.h"
#include "autograd/kernels/mlx_dequant_isa.h"
#include "autograd/process_start.h"
#include "autograd/quant.h"
#include "support/test_support.h"
#include "train_fixtures.h"

namespace lora {
namespace {

CpuFeatures all_features() {
  return {.avx2 = true, .avx512 = true, .avx512_vnni = true, .avx512_bf16 = true, .amx = true};
}

TEST(CpuFeatures, CapNamesParse) {
  EXPECT_EQ(parse_cpu_cap(""), std::nullopt);
  EXPECT_EQ(parse_cpu_cap("avx2"), CpuLevel::Avx2);
  EXPECT_EQ(parse_cpu_cap("avx512"), CpuLevel::Avx512);
  EXPECT_EQ(parse_cpu_cap("avx512_bf16"), CpuLevel::Avx512Bf16);
  EXPECT_EQ(parse_cpu_cap("amx"), CpuLevel::Amx);
  for (const char* bad : {"AVX2", "avx512f", "sse4", "avx2 ", "native"}) {
    try {
      parse_cpu_cap(bad);
      ADD_FAILURE() << "accepted " << bad;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("avx2, avx512, avx512_bf16, amx"), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  for (CpuLevel l : {CpuLevel::Avx2, CpuLevel::Avx512, CpuLevel::Avx512Bf16, CpuLevel::Amx})
    EXPECT_EQ(parse_cpu_cap(cpu_level_name(l)), l);
}

TEST(CpuFeatures, CapRemovesEverythingAboveIt) {
  const CpuFeatures all = all_features();
  EXPECT_EQ(capped(all, std::nullopt), all);
  EXPECT_EQ(capped(all, CpuLevel::Amx), all);
  EXPECT_EQ(capped(all, CpuLevel::Avx512Bf16),
            (CpuFeatures{.avx2 = true, .avx512 = true, .avx512_vnni = true, .avx512_bf16 = true}));
  // VNNI changes no result, so the AVX-512 cap keeps it; the AVX2 cap drops it with AVX-512.
  EXPECT_EQ(capped(all, CpuLevel::Avx512),
            (CpuFeatures{.avx2 = true, .avx512 = true, .avx512_vnni = true}));
  EXPECT_EQ(capped(all, CpuLevel::Avx2), (CpuFeatures{.avx2 = true}));
  EXPECT_EQ(capped(all, CpuLevel::Avx2).names(), "avx2");
  EXPECT_EQ(capped(all, CpuLevel::Avx2).level(), CpuLevel::Avx2);
  EXPECT_EQ(all.names(), "avx2 avx512 avx512_vnni avx512_bf16 amx");
  EXPECT_EQ(all.level(), CpuLevel::Amx);
  EXPECT_FALSE(capped(all, CpuLevel::Avx512).bf16_units());
  // A cap never adds what the CPU lacks.
  const CpuFeatures avx2_only{.avx2 = true};
  EXPECT_EQ(capped(avx2_only, CpuLevel::Amx), avx2_only);
}

TEST(CpuFeatures, DetectionAgreesWithTheCompilerRuntime) {
  const CpuFeatures f = detect_cpu_features();
  __builtin_cpu_init();
  EXPECT_TRUE(f.avx2) << "the build assumes x86-64-v3";
  EXPECT_EQ(f.avx512, __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"));
  EXPECT_EQ(f.avx512_bf16, f.avx512 && __builtin_cpu_supports("avx512bf16"));
  if (f.amx) {
    EXPECT_TRUE(f.avx512_bf16);
  }
  // This process runs without LORA_CPU unless the caller set one.
  EXPECT_EQ(active_cpu_features(), capped(f, cpu_cap_from_environment()));
}

// ---------- the kernel copies ----------

std::vector<float> random_floats(int64_t n, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = u(rng);
  return v;
}

const int64_t kSizes[] = {0, 1, 7, 8, 9, 15, 16, 17, 33, 100, 4099};

struct SoftmaxCopy {
  const char* name;
  float (*max_of)(const float*, int64_t);
  double (*exp_shift_sum)(float*, int64_t, float);
};
std::vector<SoftmaxCopy> softmax_copies() {
  std::vector<SoftmaxCopy> c = {{"avx2", kernels::avx2::max_of, kernels::avx2::exp_shift_sum}};
  if (detect_cpu_features().avx512)
    c.push_back({"avx512", kernels::avx512::max_of, kernels::avx512::exp_shift_sum});
  return c;
}

TEST(KernelCopies, SoftmaxLoopsMatchStdExpOnEveryCopy) {
  if (!detect_cpu_features().avx512) std::printf("no AVX-512 here: only the AVX2 copy runs\n");
  for (int64_t n : kSizes) {
    std::vector<float> x = random_floats(n, -40.0f, 3.0f, unsigned(n) + 1);
    if (n > 4) x[3] = -std::numeric_limits<float>::infinity();  // a masked score
    if (n > 20) x[n - 2] = -95.0f;                              // below the f32 exp range
    float want_max = -std::numeric_limits<float>::infinity();
    for (float v : x) want_max = std::max(want_max, v);
    for (const SoftmaxCopy& c : softmax_copies()) {
      SCOPED_TRACE(std::string(c.name) + " n=" + std::to_string(n));
      EXPECT_EQ(c.max_of(x.data(), n), want_max);
      std::vector<float> y = x;
      const double sum = c.exp_shift_sum(y.data(), n, want_max);
      double want_sum = 0.0;
      for (int64_t i = 0; i < n; ++i) {
        // The shift is subtracted in f32 by the kernels too.
        const double want = std::exp(double(x[i] - want_max));
        want_sum += want;
        EXPECT_NEAR(y[i], want, 1e-6 * want + 1e-37) << "i=" << i << " x=" << x[i];
      }
      EXPECT_NEAR(sum, want_sum, 1e-6 * want_sum);
      // Below the normal f32 range the result is exactly 0, not a denormal.
      if (n > 4) {
        EXPECT_EQ(y[3], 0.0f);
      }
      if (n > 20) {
        EXPECT_EQ(y[n - 2], 0.0f);
      }
    }
  }
}

struct SwigluCopy {
  const char* name;
  void (*forward)(const float*, const float*, int64_t, float*);
  void (*backward)(const float*, const float*, const float*, int64_t, float*, float*, bool);
};
std::vector<SwigluCopy> swiglu_copies() {
  std::vector<SwigluCopy> c = {
      {"avx2", kernels::avx2::swiglu_forward, kernels::avx2::swiglu_backward}};
  if (detect_cpu_features().avx512)
    c.push_back({"avx512", kernels::avx512::swiglu_forward, kernels::avx512::swiglu_backward});
  return c;
}

// Each copy against the double-precision template, forward and backward (accumulating, writing
// over, one output null), on sizes with and without a partial vector.
TEST(KernelCopies, SwigluMatchesTheDoubleReferenceOnEveryCopy) {
  for (int64_t n : kSizes) {
    const auto gate = random_floats(n, -12.0f, 12.0f, 7), up = random_floats(n, -2.0f, 2.0f, 8);
    const auto g = random_floats(n, -1.0f, 1.0f, 9), seed = random_floats(n, -1.0f, 1.0f, 10);
    const std::vector<double> gd(gate.begin(), gate.end()), ud(up.begin(), up.end()),
        rd(g.begin(), g.end());
    std::vector<double> y(n), dg(seed.begin(), seed.end()), du(seed.begin(), seed.end());
    kernels::swiglu_forward(gd.data(), ud.data(), n, y.data());
    kernels::swiglu_backward(gd.data(), ud.data(), rd.data(), n, dg.data(), du.data());
    for (const SwigluCopy& c : swiglu_copies()) {
      SCOPED_TRACE(std::string(c.name) + " n=" + std::to_string(n));
      std::vector<float> yf(n), dgf = seed, duf = seed, dg0(n, 5.0f);
      c.forward(gate.data(), up.data(), n, yf.data());
      c.backward(gate.data(), up.data(), g.data(), n, dgf.data(), duf.data(), true);
      c.backward(gate.data(), up.data(), g.data(), n, dg0.data(), nullptr, false);
      for (int64_t i = 0; i < n; ++i) {
        EXPECT_NEAR(yf[i], y[i], 2e-6 * (1 + std::abs(y[i]))) << i;
        EXPECT_NEAR(dgf[i], dg[i], 2e-6 * (1 + std::abs(dg[i]))) << i;
        EXPECT_NEAR(duf[i], du[i], 2e-6 * (1 + std::abs(du[i]))) << i;
        EXPECT_NEAR(dg0[i], dg[i] - seed[i], 2e-6 * (1 + std::abs(dg[i]))) << i;
      }
    }
  }
}

TEST(KernelCopies, Bf16RoundingMatchesTheScalarRounding) {
  if (!detect_cpu_features().avx512_bf16) GTEST_SKIP() << "no AVX512-BF16 on this CPU";
  auto x = random_floats(1000, -3.0f, 3.0f, 11);
  x[0] = 1.0f + 1.0f / 256;  // a tie: rounds to even (1.0)
  x[1] = 1.0f + 3.0f / 256;  // a tie: rounds to even (1 + 4/256)
  x[2] = -0.0f;
  x[3] = std::numeric_limits<float>::infinity();
  for (int64_t n : kSizes) {
    if (n > 1000) continue;
    std::vector<uint16_t> got(static_cast<std::size_t>(n) + 1, 0xABCD);
    kernels::avx512bf16::round_to_bf16(x.data(), n, got.data());
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(got[i], f32_to_bf16(x[i])) << "n=" << n << " i=" << i;
    EXPECT_EQ(got[n], 0xABCD) << "wrote past the end, n=" << n;
  }
}

TEST(KernelCopies, GgmlDequantizationCopiesAgree) {
  const int64_t cols = 512;
  const auto x = random_floats(cols, -2.0f, 2.0f, 12);
  for (GgmlType t :
       {GgmlType::F16, GgmlType::BF16, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
        GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    SCOPED_TRACE(std::string(ggml_type_name(t)));
    std::vector<std::byte> row(ggml_row_bytes(t, cols));
    ggml_quantize_row(t, x.data(), cols, row.data());
    std::vector<float> want(cols), avx2(cols), avx512(cols);
    ggml_dequantize_row_reference(t, row.data(), cols, want.data());
    gguf_avx2::dequantize_row(t, row.data(), cols, avx2.data());
    for (int64_t i = 0; i < cols; ++i)
      EXPECT_NEAR(avx2[i], want[i], 2e-6f * (1 + std::abs(want[i])));
    if (!detect_cpu_features().avx512) continue;
    gguf_avx512::dequantize_row(t, row.data(), cols, avx512.data());
    for (int64_t i = 0; i < cols; ++i)
      EXPECT_NEAR(avx512[i], want[i], 2e-6f * (1 + std::abs(want[i])));
  }
}

// MLX 4-bit rows widen to scale * q + bias, read from the codes here: through dequantize_rows
// (the AVX-512 copy where this CPU has it) and through the AVX-512 copy itself, for every group
// size.
TEST(KernelCopies, MlxFourBitWideningMatchesItsCodes) {
  const int64_t rows = 3, cols = 384;
  const auto w = random_floats(rows * cols, -1.0f, 1.0f, 13);
  for (int group : {32, 64, 128}) {
    SCOPED_TRACE("group " + std::to_string(group));
    const QuantizedMatrix q = quantize(w, rows, cols, 4, group);
    std::vector<float> want(static_cast<std::size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const uint32_t word = q.packed[(r * cols + c) / 8];
        const float code = float((word >> (4 * (c % 8))) & 15u);
        const int64_t g = r * (cols / group) + c / group;
        want[r * cols + c] = float(double(q.scales[g]) * code + double(q.biases[g]));
      }
    std::vector<float> got(want.size());
    dequantize_rows(q, 0, rows, got.data());
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], want[i], 1e-6f * (1 + std::abs(want[i]))) << i;
    if (!detect_cpu_features().avx512) continue;
    std::vector<float> avx512(want.size());
    for (int64_t r = 0; r < rows; ++r)
      mlx_avx512::dequantize_row4(reinterpret_cast<const uint8_t*>(&q.packed[r * cols / 8]),
                                  &q.scales[r * (cols / group)], &q.biases[r * (cols / group)],
                                  cols, group, &avx512[r * cols]);
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(avx512[i], want[i], 1e-6f * (1 + std::abs(want[i]))) << i;
  }
}

// ---------- the cap through the CLI ----------

test::CommandResult lora_under(const std::string& cap, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"env", "LORA_CPU=" + cap, test::lora_bin()};
  argv.insert(argv.end(), args.begin(), args.end());
  return test::run_program(argv);
}

TEST(CpuCapCli, VersionReportsTheCapAndTheLibrariesFollowIt) {
  auto r = lora_under("avx2", {"--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("in use:   avx2 (LORA_CPU cap: avx2)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("onednn isa:            avx2"), std::string::npos) << r.out;
  if (detect_cpu_features().avx512) {
    EXPECT_NE(r.out.find("openblas kernels:      Haswell"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("detected: avx2 avx512"), std::string::npos) << r.out;
  }
  r = lora_under("", {"--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("in use:   " + detect_cpu_features().names() + " (LORA_CPU cap: none)"),
            std::string::npos)
      << r.out;
  r = lora_under("avx1024", {"--version"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("LORA_CPU must be one of"), std::string::npos) << r.err;
}

// The settings a fresh start needs: OpenBLAS's AVX2 kernels under an AVX2 cap on an AVX-512 CPU
// (not when OPENBLAS_CORETYPE is set or the CPU picks them anyway), and glibc's huge pages added
// to whatever tunables are set, unless they name the huge-page tunable already.
TEST(ProcessStart, MissingSettings) {
  const EnvSetting huge{"GLIBC_TUNABLES", "glibc.malloc.hugetlb=1"};
  const EnvSetting haswell{"OPENBLAS_CORETYPE", "Haswell"};
  using V = std::vector<EnvSetting>;
  EXPECT_EQ(missing_start_settings(nullptr, nullptr, nullptr, true), V{huge});
  EXPECT_EQ(missing_start_settings("avx2", nullptr, nullptr, true), (V{haswell, huge}));
  EXPECT_EQ(missing_start_settings("avx2", nullptr, nullptr, false), V{huge});
  EXPECT_EQ(missing_start_settings("avx2", "SkylakeX", nullptr, true), V{huge});
  EXPECT_EQ(missing_start_settings("avx512", nullptr, nullptr, true), V{huge});
  EXPECT_EQ(missing_start_settings("", nullptr, "glibc.malloc.hugetlb=0", true), V{});
  EXPECT_EQ(missing_start_settings(nullptr, nullptr, "glibc.malloc.tcache_count=0", true),
            (V{{"GLIBC_TUNABLES", "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1"}}));
  EXPECT_THROW(missing_start_settings("avx1024", nullptr, nullptr, true), std::invalid_argument);
}

// The CLI starts again with the huge-page tunable set, and keeps a user's own choice.
TEST(ProcessStart, CliRunsWithHugePagesUnlessTold) {
  auto r = test::run_program({"env", "-u", "GLIBC_TUNABLES", test::lora_bin(), "--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("glibc tunables:        glibc.malloc.hugetlb=1"), std::string::npos)
      << r.out;
  r = test::run_program(
      {"env", "GLIBC_TUNABLES=glibc.malloc.hugetlb=0", test::lora_bin(), "--version"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("glibc tunables:        glibc.malloc.hugetlb=0"), std::string::npos)
      << r.out;
}

// The report the benchmarks write into their JSON names the glibc tunables in force, so a figure
// says whether it ran in huge pages.
TEST(ProcessStart, ReportNamesTheTunablesInForce) {
  const char* before = std::getenv("GLIBC_TUNABLES");
  const std::string saved = before ? before : "";
  ::setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1", 1);
  EXPECT_NE(cpu_report().json().find(R"("glibc_tunables":"glibc.malloc.hugetlb=1")"),
            std::string::npos)
      << cpu_report().json();
  ::unsetenv("GLIBC_TUNABLES");
  EXPECT_EQ(cpu_report().glibc_tunables, "(none)");
  if (before) ::setenv("GLIBC_TUNABLES", saved.c_str(), 1);
}

// The AVX2 path trains to the same losses as the full one (float noise apart), and bf16 asked
// for where the cap leaves no bf16 units runs f32 and says so.
TEST(CpuCapCli, Avx2PathTrainsLikeTheFullPath) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  test::TempDir tmp("cpu-cap");
  test::make_story_data(tmp / "data", 16, 4);
  auto train = [&](const std::string& cap, const std::string& name, const std::string& dtype) {
    const auto out = tmp / name;
    auto r = lora_under(cap, test::stories_train_args(tmp / "data", out,
                                                      {"--iters", "8", "--steps-per-report", "4",
                                                       "--compute-dtype", dtype}));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (dtype == "bf16" && cap == "avx512") {
      EXPECT_NE((r.out + r.err).find("no bf16 matmul units"), std::string::npos) << r.out << r.err;
    }
    return test::logged_losses(out / "metrics.jsonl", "train");
  };
  const auto full = train("", "full", "f32");
  const auto avx2 = train("avx2", "avx2", "f32");
  ASSERT_EQ(full.size(), 2u);
  ASSERT_EQ(avx2.size(), full.size());
  for (std::size_t i = 0; i < full.size(); ++i) EXPECT_NEAR(avx2[i], full[i], 1e-4 * full[i]);
  if (!detect_cpu_features().avx512) return;
  const auto bf16_capped = train("avx512", "bf16-capped", "bf16");
  ASSERT_EQ(bf16_capped.size(), full.size());
  for (std::size_t i = 0; i < full.size(); ++i)
    EXPECT_NEAR(bf16_capped[i], full[i], 1e-4 * full[i]);
}

// Where OpenBLAS runs its AVX2 kernels while AVX-512 is in use (here from an OPENBLAS_CORETYPE in
// the environment), lora train says so; with its AVX-512 kernels, or under an AVX2 cap, it does
// not.
TEST(CpuCapCli, TrainNotesOpenBlasKernelsBelowTheCpu) {
  LORA_REQUIRE_SHARED(test::kStoriesModel);
  test::TempDir tmp("blas-note");
  test::make_story_data(tmp / "data", 16, 4);
  auto train_output = [&](std::vector<std::string> env, const std::string& name) {
    std::vector<std::string> argv = {"env"};
    argv.insert(argv.end(), env.begin(), env.end());
    argv.push_back(test::lora_bin());
    for (auto& a : test::stories_train_args(tmp / "data", tmp / name, {"--iters", "2"}))
      argv.push_back(a);
    auto r = test::run_program(argv);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.out + r.err;
  };
  const std::string note = "kernels on a CPU whose AVX-512 is in use";
  const std::string haswell = train_output({"-u", "LORA_CPU", "OPENBLAS_CORETYPE=Haswell"}, "h");
  EXPECT_EQ(haswell.find(note) != std::string::npos, detect_cpu_features().avx512) << haswell;
  if (detect_cpu_features().avx512) {
    EXPECT_NE(haswell.find("OPENBLAS_CORETYPE=Haswell in the environment"), std::string::npos)
        << haswell;
  }
  const std::string capped = train_output({"LORA_CPU=avx2", "OPENBLAS_CORETYPE=Haswell"}, "c");
  EXPECT_EQ(capped.find(note), std::string::npos) << capped;
  if (!detect_cpu_features().avx512) return;
  const std::string own = train_output({"-u", "LORA_CPU", "OPENBLAS_CORETYPE=SkylakeX"}, "s");
  EXPECT_EQ(own.find(note), std::string::npos) << own;
}

}  // namespace
}  // namespace lora
