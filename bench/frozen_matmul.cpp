// The frozen products of LoRA training against plain sgemm on the same shapes: y = x W^T and
// dx = g W for a 4-bit (MLX affine, group 64) weight, alone and with a folded rank-8 LoRA delta,
// next to cblas_sgemm on the already widened f32 weight. The gap between the two is what
// widening (and folding) costs per product; sgemm_peak's figure is the ceiling of both. Last, the
// LoRA weight-gradient pass of a folded rank-8 branch (GFLOP/s of its four rank-r products).
//   build/bench/frozen_matmul [--tokens 2048] [--reps 5]     prints one JSON object
#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/frozen_weight.h"
#include "autograd/kernels/kernels_lora.h"
#include "autograd/process_start.h"
#include "autograd/quant.h"
#include "bench/bench_args.h"

namespace {

// Best of `reps` timed calls (after one untimed), as GFLOP/s for `flops` per call.
double best_gflops(const std::function<void()>& call, double flops, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    call();
    const double dt = lora::bench::seconds_since(t0);
    if (r > 0) best = std::min(best, dt);
  }
  return flops / best / 1e9;
}

std::vector<float> uniform(std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.03f, 0.03f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  lora::restart_with_start_settings(argv);  // OpenBLAS's cap and glibc's huge pages: a fresh start
  const lora::bench::MatmulArgs args = lora::bench::parse_matmul_args(argc, argv);
  const int m = args.tokens, reps = args.reps, rank = 8;
  struct Shape {
    int k, n;  // in, out
  };
  const Shape shapes[] = {{576, 576}, {576, 192},  {576, 1536}, {1536, 576},
                          {896, 896}, {896, 4864}, {4864, 896}};
  std::string rows;
  for (const Shape& s : shapes) {
    const auto wf = uniform(std::size_t(s.n) * s.k, 1);
    const lora::FrozenWeight q4 =
        lora::FrozenWeight::from_quantized(lora::quantize(wf, s.n, s.k, 4, 64, lora::DType::BF16));
    const std::vector<float> w = q4.to_f32();
    const auto x = uniform(std::size_t(m) * s.k, 2), g = uniform(std::size_t(m) * s.n, 3);
    const auto a = uniform(std::size_t(rank) * s.k, 4), b = uniform(std::size_t(s.n) * rank, 5);
    const lora::LowRankDelta delta{a.data(), b.data(), rank, 2.0f};
    std::vector<float> y(std::size_t(m) * s.n), dx(std::size_t(m) * s.k);
    const double flops = 2.0 * m * s.k * double(s.n);
    const double sgemm_fwd = best_gflops(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, s.n, s.k, 1.0f, x.data(), s.k,
                      w.data(), s.k, 0.0f, y.data(), s.n);
        },
        flops, reps);
    const double sgemm_bwd = best_gflops(
        [&] {
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, s.k, s.n, 1.0f, g.data(), s.n,
                      w.data(), s.k, 0.0f, dx.data(), s.k);
        },
        flops, reps);
    const double q4_fwd =
        best_gflops([&] { lora::frozen_matmul(q4, x.data(), m, y.data()); }, flops, reps);
    const double q4_bwd = best_gflops(
        [&] { lora::frozen_matmul_input_grad(q4, g.data(), m, dx.data()); }, flops, reps);
    const double fold_fwd = best_gflops(
        [&] {
          lora::frozen_matmul(q4, x.data(), m, y.data(), 0.0f, lora::ComputeDType::F32,
                              {&delta, 1});
        },
        flops, reps);
    const double fold_bwd = best_gflops(
        [&] {
          lora::frozen_matmul_input_grad(q4, g.data(), m, dx.data(), 0.0f, lora::ComputeDType::F32,
                                         {&delta, 1});
        },
        flops, reps);
    // The folded branch's weight gradients (and x A^T), one pass over g and x: 4 rank-r products.
    std::vector<float> gu(std::size_t(m) * rank), da(a.size()), db(b.size());
    const double lora_bwd = best_gflops(
        [&] {
          lora::kernels::lora_backward(g.data(), x.data(), nullptr, a.data(), b.data(), m, s.k, s.n,
                                       rank, 2.0f, gu.data(), da.data(), db.data());
        },
        8.0 * m * rank * double(s.k + s.n), reps);
    char buf[400];
    std::snprintf(buf, sizeof buf,
                  "%s{\"m\":%d,\"k\":%d,\"n\":%d,\"sgemm_fwd\":%.1f,\"sgemm_bwd\":%.1f,"
                  "\"q4_fwd\":%.1f,\"q4_bwd\":%.1f,\"q4_fold_fwd\":%.1f,\"q4_fold_bwd\":%.1f,"
                  "\"lora_bwd\":%.1f}",
                  rows.empty() ? "" : ",\n", m, s.k, s.n, sgemm_fwd, sgemm_bwd, q4_fwd, q4_bwd,
                  fold_fwd, fold_bwd, lora_bwd);
    rows += buf;
    std::fprintf(stderr, "%s\n", buf + (rows.size() == std::string(buf).size() ? 0 : 2));
  }
  std::printf("{\"threads\":%d,\"cpu\":%s,\"gflops\":[%s]}\n", omp_get_max_threads(),
              lora::cpu_report().json().c_str(), rows.c_str());
  return 0;
}
