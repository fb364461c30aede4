// The decode products' kernels alone, on one MLX 4-bit matrix small enough to stay in cache: what
// the instructions cost, apart from what the memory gives (decode_profile measures the products of
// a whole model from memory, where this VM's bandwidth moves by half between processes). Each
// vector instruction-set copy this CPU runs, with f32 and with int8 activations, one vector at a
// time on one thread, the median over --reps products; bytes count the codes, scales and biases.
//   build/bench/gemv_kernels [--rows 1536] [--cols 576] [--group 64] [--reps 3000]
//                            [--type mlx4|q4_0|q4_k|q6_k]
// --type picks a ggml block type instead of MLX 4-bit (bytes then count the whole blocks; cols a
// multiple of 256 for the K types: --cols 1536 --rows 576 is a SmolLM2-135M down projection);
// any type we read, those we only read (iq2_xs, tq1_0, ...) as random blocks.
// Defaults are a SmolLM2-135M MLP projection (432 KiB of codes: in L2 on the CPUs measured);
// --rows 4096 --cols 1024 is 2 MiB (L3). Prints one JSON object per copy.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/frozen_gemv.h"
#include "autograd/gguf_quant.h"
#include "autograd/quant.h"
#include "bench/bench_args.h"
#include "tests/gguf_test_util.h"

namespace {

using namespace lora;

struct Copy {
  GemvIsa isa;
  GemvActivations activations;
  std::vector<double> seconds;
};

// Every vector copy this CPU runs.
std::vector<Copy> copies() {
  std::vector<Copy> out;
  for (GemvIsa isa : {GemvIsa::Avx2, GemvIsa::Avx512, GemvIsa::Avx512Vnni})
    for (GemvActivations a : {GemvActivations::F32, GemvActivations::Int8})
      if (gemv_isa_supported(isa)) out.push_back({isa, a, {}});
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t rows = 1536, cols = 576;
  int group = 64, reps = 3000;
  std::string type = "mlx4";
  try {
    bench::parse_flags(argc, argv, [&](const std::string& k, auto& value) {
      if (k == "--rows")
        rows = std::stoll(value());
      else if (k == "--cols")
        cols = std::stoll(value());
      else if (k == "--group")
        group = std::stoi(value());
      else if (k == "--reps")
        reps = std::max(1, std::stoi(value()));
      else if (k == "--type")
        type = value();
      else
        return false;
      return true;
    });
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gemv_kernels: %s\n", e.what());
    return 2;
  }
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> dense(static_cast<std::size_t>(rows * cols)),
      x(static_cast<std::size_t>(cols));
  for (float& v : dense) v = normal(rng);
  for (float& v : x) v = 10.0f * normal(rng);
  FrozenWeight w;
  double bytes = double(rows) * (double(cols) / 2 + 8.0 * double(cols) / group);
  if (type == "mlx4") {
    w = FrozenWeight::from_quantized(quantize(dense, rows, cols, 4, group));
  } else {
    const auto t = ggml_type_named(type);
    if (!t || ggml_block_elems(*t) == 1 || cols % ggml_block_elems(*t) != 0) {
      std::fprintf(stderr, "gemv_kernels: --type %s: not a block type dividing %lld columns\n",
                   type.c_str(), static_cast<long long>(cols));
      return 2;
    }
    // Types we cannot write: the tests' random blocks (random codes, finite scales).
    const std::vector<std::byte> blocks = ggml_type_writable(*t)
                                              ? ggml_quantize_rows(*t, dense, rows, cols)
                                              : test::random_ggml_bytes(*t, rows, cols, 1);
    w = FrozenWeight::from_ggml(GgmlMatrix::owning(rows, cols, *t, blocks));
    bytes = double(blocks.size());
  }
  std::vector<float> y(static_cast<std::size_t>(rows));
  const GemvProduct product{&w, y.data()};
  const std::string cpu = active_cpu_features().names();
  // The copies take turns product by product, so that the VM's swings in speed (by half between
  // one second and the next) fall on all of them alike.
  std::vector<Copy> all = copies();
  for (int r = 0; r < reps; ++r)
    for (Copy& c : all) {
      const auto t0 = std::chrono::steady_clock::now();
      frozen_gemv({&product, 1}, x.data(), 1, c.isa, c.activations);
      c.seconds.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  for (Copy& c : all) {
    std::nth_element(c.seconds.begin(), c.seconds.begin() + reps / 2, c.seconds.end());
    const double s = c.seconds[static_cast<std::size_t>(reps / 2)];
    std::printf(
        "{\"bench\": \"gemv_kernels\", \"type\": \"%s\", \"isa\": \"%s\", \"activations\": "
        "\"%s\", \"rows\": %lld, \"cols\": %lld, \"group\": %d, \"reps\": %d, \"median_us\": "
        "%.2f, \"gbps\": %.2f, \"cpu\": \"%s\"}\n",
        type.c_str(), std::string(gemv_isa_name(c.isa)).c_str(),
        c.activations == GemvActivations::Int8 ? "int8" : "f32", static_cast<long long>(rows),
        static_cast<long long>(cols), group, reps, s * 1e6, bytes / s / 1e9, cpu.c_str());
  }
}
