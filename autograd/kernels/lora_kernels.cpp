// The LoRA branch products of kernels_lora.h: token blocks over the threads, each block's loops
// from the instruction set's copy (kernels/lora_loops.h), every buffer owned here.
#include <omp.h>

#include <algorithm>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/kernels/kernel_variants.h"
#include "autograd/kernels/kernels_lora.h"
#include "autograd/parallel.h"

namespace lora::kernels {
namespace {

// Tokens per block: 32 rows of g and x stay in L2 while every product of the block reads them.
constexpr int64_t kTokenBlock = 32;
// Below this many multiply-adds a product runs on one thread.
constexpr int64_t kParallelWork = int64_t(1) << 18;

const LoraLoops& chosen(const LoraLoops* loops) {
  if (loops) return *loops;
  static const LoraLoops& active =
      active_cpu_features().avx512 ? avx512::lora_loops() : avx2::lora_loops();
  return active;
}

std::vector<float> part_scratch(const LoraLoops& k, int64_t r) {
  return std::vector<float>(static_cast<std::size_t>(kTokenBlock * r * k.lanes));
}

}  // namespace

void rank_project(const float* X, int64_t n, const float* M, int64_t width, int64_t r, float scale,
                  float* out) {
  const LoraLoops& k = chosen(nullptr);
  parallel_for_with_scratch((n + kTokenBlock - 1) / kTokenBlock, n * width * r >= kParallelWork,
                            [&] { return part_scratch(k, r); },
                            [&](std::vector<float>& part, int64_t b) {
                              const int64_t i0 = b * kTokenBlock;
                              k.rank_dots(X + i0 * width, width, std::min(kTokenBlock, n - i0), M,
                                          width, r, scale, out + i0 * r, part.data());
                            });
}

void rank_expand(const float* coef, int64_t n, const float* M, int64_t width, int64_t r,
                 float scale, float* out) {
  const LoraLoops& k = chosen(nullptr);
  parallel_for((n + kTokenBlock - 1) / kTokenBlock, n * width * r >= kParallelWork, [&](int64_t b) {
    const int64_t i0 = b * kTokenBlock;
    k.rank_expand_rows(coef + i0 * r, std::min(kTokenBlock, n - i0), M, width, r, scale,
                       out + i0 * width);
  });
}

// Each thread takes a contiguous run of tokens, reuses every block of g and x from cache for all
// of its products, and accumulates dA and dB in private buffers summed in thread order at the
// end (the result depends on the thread count, not on timing).
void lora_backward(const float* g, const float* x, const float* u, const float* A, const float* B,
                   int64_t n, int64_t in, int64_t out, int64_t r, float scale, float* gu, float* dA,
                   float* dB, const LoraLoops* loops) {
  const LoraLoops& k = chosen(loops);
  const std::vector<float> bt = transposed(B, out, r);  // gu's dots run along contiguous rows
  const int threads = team_splits(n >= 4 * kTokenBlock) ? omp_get_max_threads() : 1;
  // Per thread: dB^T [r, out] then dA [r, in].
  const int64_t per_thread = r * (out + in);
  std::vector<float> acc(static_cast<std::size_t>(threads * per_thread), 0.0f);
  const auto run = [&](int t, int nt) {
    const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
    float* dbt = acc.data() + t * per_thread;
    float* da = dbt + r * out;
    std::vector<float> su(static_cast<std::size_t>(kTokenBlock * r));
    std::vector<float> part = part_scratch(k, r);
    for (int64_t i0 = begin; i0 < end; i0 += kTokenBlock) {
      const int64_t rows = std::min(kTokenBlock, end - i0);
      const float* gb = g + i0 * out;
      const float* xb = x + i0 * in;
      k.rank_dots(gb, out, rows, bt.data(), out, r, scale, gu + i0 * r, part.data());
      if (u) {
        for (int64_t i = 0; i < rows * r; ++i) su[i] = scale * u[i0 * r + i];
      } else {
        k.rank_dots(xb, in, rows, A, in, r, scale, su.data(), part.data());
      }
      k.accumulate_outer(su.data(), r, gb, out, rows, out, dbt);
      k.accumulate_outer(gu + i0 * r, r, xb, in, rows, in, da);
    }
  };
  if (threads == 1) {
    run(0, 1);  // no OpenMP region at all (parallel.h)
  } else {
#pragma omp parallel num_threads(threads)
    run(omp_get_thread_num(), omp_get_num_threads());
  }
  for (int t = 0; t < threads; ++t) {
    const float* dbt = acc.data() + t * per_thread;
    const float* da = dbt + r * out;
    for (int64_t o = 0; o < out; ++o)
      for (int64_t j = 0; j < r; ++j) dB[o * r + j] += dbt[j * out + o];
    for (int64_t i = 0; i < r * in; ++i) dA[i] += da[i];
  }
}

std::vector<float> transposed(const float* m, int64_t rows, int64_t cols) {
  std::vector<float> t(static_cast<std::size_t>(rows * cols));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * rows + i] = m[i * cols + j];
  return t;
}

}  // namespace lora::kernels
