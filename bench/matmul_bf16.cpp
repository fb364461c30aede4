// Microbenchmark of the frozen base's products: f32 sgemm (OpenBLAS) against bf16 (oneDNN on
// AMX / AVX512-BF16), prepacked and plain, forward (x W^T) and input gradient (g W), on the
// projection shapes of SmolLM2-135M and Qwen2.5-0.5B.
//   build/bench/matmul_bf16 [--tokens 2048] [--reps 5]     prints a table, then one JSON object
#include "autograd/kernels/matmul_bf16.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/dtype.h"
#include "autograd/process_start.h"
#include "bench/bench_args.h"

namespace {

double best_seconds(int reps, const std::function<void()>& fn) {
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::min(best, dt);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  lora::restart_with_start_settings(argv);  // OpenBLAS's cap and glibc's huge pages: a fresh start
  using lora::Bf16Product;
  const lora::bench::MatmulArgs args = lora::bench::parse_matmul_args(argc, argv);
  const int tokens = args.tokens, reps = args.reps;
  std::printf("threads %d, bf16 isa: %s (native: %s)\n", omp_get_max_threads(),
              lora::bf16_matmul_isa().c_str(), lora::bf16_matmul_available() ? "yes" : "no");
  struct Shape {
    const char* name;
    int rows, cols;  // W [out, in]
  };
  const Shape shapes[] = {{"smollm q/o", 576, 576},    {"smollm gate/up", 1536, 576},
                          {"smollm down", 576, 1536},  {"qwen q/o", 896, 896},
                          {"qwen gate/up", 4864, 896}, {"qwen down", 896, 4864}};
  std::printf("%-16s %-5s %10s %12s %12s %8s\n", "shape", "op", "f32 GF/s", "bf16 pk GF/s",
              "bf16 pl GF/s", "speedup");
  std::string json;
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  const int m = tokens;
  for (const Shape& s : shapes) {
    std::vector<float> w(std::size_t(s.rows) * s.cols);
    for (float& v : w) v = u(rng);
    std::vector<uint16_t> wb(w.size());
    for (std::size_t i = 0; i < w.size(); ++i) wb[i] = lora::f32_to_bf16(w[i]);
    for (const Bf16Product p : {Bf16Product::XWt, Bf16Product::GW}) {
      const bool fwd = p == Bf16Product::XWt;
      const int k = fwd ? s.cols : s.rows, n = fwd ? s.rows : s.cols;
      std::vector<float> x(std::size_t(m) * k), y(std::size_t(m) * n);
      for (float& v : x) v = u(rng);
      const double flops = 2.0 * m * double(k) * n;
      const double t_f32 = best_seconds(reps, [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, fwd ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                    x.data(), k, w.data(), s.cols, 0.0f, y.data(), n);
      });
      const lora::PackedBf16Weight packed(wb.data(), s.rows, s.cols, p);
      const double t_pk = best_seconds(reps, [&] { packed.multiply(x.data(), m, y.data()); });
      const double t_pl = best_seconds(
          reps, [&] { lora::matmul_bf16(p, wb.data(), s.rows, s.cols, x.data(), m, y.data()); });
      std::printf("%-16s %-5s %10.0f %12.0f %12.0f %7.2fx\n", s.name, fwd ? "xW^T" : "gW",
                  flops / t_f32 / 1e9, flops / t_pk / 1e9, flops / t_pl / 1e9, t_f32 / t_pk);
      char buf[256];
      std::snprintf(buf, sizeof buf,
                    "%s{\"shape\":\"%s\",\"op\":\"%s\",\"m\":%d,\"k\":%d,\"n\":%d,"
                    "\"f32_gflops\":%.1f,\"bf16_packed_gflops\":%.1f,\"bf16_plain_gflops\":%.1f}",
                    json.empty() ? "" : ",", s.name, fwd ? "xWt" : "gW", m, k, n,
                    flops / t_f32 / 1e9, flops / t_pk / 1e9, flops / t_pl / 1e9);
      json += buf;
    }
  }
  std::printf("{\"threads\":%d,\"cpu\":%s,\"isa\":\"%s\",\"results\":[%s]}\n",
              omp_get_max_threads(), lora::cpu_report().json().c_str(),
              lora::bf16_matmul_isa().c_str(), json.c_str());
  return 0;
}
