// A prompt's frozen products alone: frozen_short_gemm (autograd/frozen_gemv.h) on a 4-bit MLX
// weight (group 64) of TinyLlama-1.1B's four shapes, against the same product with each block of
// rows going past the whole of x at once (one tile_gemm over all columns per block of tile_rows
// rows, as frozen_short_gemm did before it took x a chunk of columns at a time). The two
// alternate call by call in one process, on the library's threads (OMP_NUM_THREADS).
//
//   build/bench/short_gemm [--tokens 62] [--reps 21]
// Prints one JSON line per shape: median GFLOP/s of each and their ratio.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/frozen_gemv.h"
#include "autograd/frozen_weight.h"
#include "autograd/heap.h"
#include "autograd/kernels/kernels_attention.h"
#include "autograd/line_aligned.h"
#include "autograd/parallel.h"
#include "autograd/process_start.h"
#include "autograd/quant.h"
#include "bench/bench_args.h"

namespace {

using lora::FrozenWeight;

// y[n, rows] = x W^T, a block of tile_rows rows against all of x transposed at once.
void whole_x_per_block(const FrozenWeight& w, const float* x, int64_t n, float* y,
                       const lora::gemv::Kernels& k) {
  const int64_t rows = w.rows, cols = w.cols, R = k.tile_rows;
  const int64_t padded = (n + k.lanes - 1) / k.lanes * k.lanes;
  lora::LineAlignedFloats xt(static_cast<std::size_t>(cols * padded), 0.0f);  // as the library's
  for (int64_t t = 0; t < n; ++t)
    for (int64_t c = 0; c < cols; ++c) xt[c * padded + t] = x[t * cols + c];
  struct Scratch {
    std::vector<float> widened, out;
  };
  lora::parallel_for_with_scratch(
      (rows + R - 1) / R, true,
      [&] {
        return Scratch{std::vector<float>(static_cast<std::size_t>(R * cols)),
                       std::vector<float>(static_cast<std::size_t>(R * padded))};
      },
      [&](Scratch& s, int64_t b) {
        const int64_t r0 = b * R, used = std::min(R, rows - r0);
        w.rows_f32(r0, r0 + used, s.widened.data());
        std::fill(s.widened.begin() + used * cols, s.widened.end(), 0.0f);
        k.tile_gemm({.m = R,
                     .n = padded,
                     .k = cols,
                     .a = s.widened.data(),
                     .a_row = cols,
                     .a_col = 1,
                     .b = xt.data(),
                     .ldb = padded,
                     .c = s.out.data(),
                     .ldc = padded});
        for (int64_t t = 0; t < n; ++t)
          for (int64_t r = 0; r < used; ++r) y[t * rows + r0 + r] = s.out[r * padded + t];
      });
}

double seconds_of(const auto& call) {
  const auto t0 = std::chrono::steady_clock::now();
  call();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  lora::restart_with_start_settings(argv);
  lora::keep_freed_memory_for_reuse();
  int64_t tokens = 62;
  int reps = 21;
  lora::bench::parse_flags(argc, argv, [&](const std::string& flag, auto& value) {
    if (flag == "--tokens")
      tokens = std::stoll(value());
    else if (flag == "--reps")
      reps = std::stoi(value());
    else
      return false;
    return true;
  });
  const lora::GemvIsa isa = lora::gemv_isa();
  const lora::gemv::Kernels& k = lora::kernels::tile_kernels();  // gemv_isa()'s
  const std::pair<int64_t, int64_t> shapes[] = {
      {2048, 2048}, {256, 2048}, {5632, 2048}, {2048, 5632}};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const auto& [rows, cols] : shapes) {
    std::vector<float> dense(static_cast<std::size_t>(rows * cols)),
        x(static_cast<std::size_t>(tokens * cols)), y(static_cast<std::size_t>(tokens * rows));
    for (float& v : dense) v = 0.05f * normal(rng);
    for (float& v : x) v = normal(rng);
    const auto w = FrozenWeight::from_quantized(lora::quantize(dense, rows, cols, 4, 64));
    std::vector<double> chunked, whole;
    for (int r = 0; r < reps + 1; ++r) {
      const double a = seconds_of([&] { whole_x_per_block(w, x.data(), tokens, y.data(), k); });
      const double b =
          seconds_of([&] { lora::frozen_short_gemm(w, x.data(), tokens, y.data(), 0.0f, isa); });
      if (r == 0) continue;  // warms the caches and the threads
      whole.push_back(a);
      chunked.push_back(b);
    }
    const double gflop = 2.0 * double(rows) * double(cols) * double(tokens) / 1e9;
    std::printf(
        "{\"bench\": \"short_gemm\", \"isa\": \"%s\", \"threads\": %d, \"tokens\": %lld, "
        "\"rows\": %lld, \"cols\": %lld, \"whole_x_gflops\": %.1f, \"chunked_gflops\": %.1f, "
        "\"ratio\": %.3f}\n",
        std::string(lora::gemv_isa_name(isa)).c_str(), lora::team_size(),
        static_cast<long long>(tokens), static_cast<long long>(rows), static_cast<long long>(cols),
        gflop / median(whole), gflop / median(chunked), median(whole) / median(chunked));
  }
}
