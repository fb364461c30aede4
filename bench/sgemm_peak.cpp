// The f32 matmul peak of this machine, measured on the spot: OpenBLAS sgemm on the linear shapes
// of LoRA training (a few thousand tokens times the projection sizes). bench/train_throughput's
// model FLOPs utilisation is quoted against this figure.
//   build/bench/sgemm_peak [--tokens 2048] [--reps 5]     prints one JSON object
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/process_start.h"
#include "bench/bench_args.h"

namespace {

struct Shape {
  int k, n;  // in, out
};

// Best-of-reps GFLOP/s of y[m, n] = x[m, k] W^T (W [n, k], the linear forward layout).
double sgemm_gflops(int m, Shape s, int reps) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> x(std::size_t(m) * s.k), w(std::size_t(s.n) * s.k), y(std::size_t(m) * s.n);
  for (float& v : x) v = u(rng);
  for (float& v : w) v = u(rng);
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, s.n, s.k, 1.0f, x.data(), s.k, w.data(),
                s.k, 0.0f, y.data(), s.n);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::min(best, dt);  // the first call warms caches and thread pools
  }
  return 2.0 * m * s.k * double(s.n) / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  lora::restart_with_start_settings(argv);  // OpenBLAS's cap and glibc's huge pages: a fresh start
  const lora::bench::MatmulArgs args = lora::bench::parse_matmul_args(argc, argv);
  const int tokens = args.tokens, reps = args.reps;
  // SmolLM2-135M and Qwen2.5-0.5B projection shapes (q, gate, down).
  const Shape shapes[] = {{576, 576}, {576, 1536}, {1536, 576},
                          {896, 896}, {896, 4864}, {4864, 896}};
  std::string rows;
  double peak = 0.0;
  for (const Shape& s : shapes) {
    const double g = sgemm_gflops(tokens, s, reps);
    peak = std::max(peak, g);
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s{\"m\":%d,\"k\":%d,\"n\":%d,\"gflops\":%.1f}",
                  rows.empty() ? "" : ",", tokens, s.k, s.n, g);
    rows += buf;
  }
  std::printf("{\"threads\":%d,\"cpu\":%s,\"peak_gflops\":%.1f,\"shapes\":[%s]}\n",
              omp_get_max_threads(), lora::cpu_report().json().c_str(), peak, rows.c_str());
  return 0;
}
