#include "autograd/frozen_weight.h"

#include <cblas.h>

#include <algorithm>
#include <memory>
#include <stdexcept>
#include <string>

#include "autograd/dtype.h"
#include "autograd/frozen_gemv.h"
#include "autograd/kernels/matmul_bf16.h"
#include "autograd/parallel.h"

namespace lora {

namespace {

// Rows widened per sgemm call for bf16 and quantized weights. Every sgemm call repacks x, and
// in the input gradient every tile reads and writes all of dx, so tiles are as large as a
// bounded buffer allows: up to 8 Mi floats (32 MiB), which holds every projection of the
// supported shapes whole (4-bit dequantize + one sgemm costs 1.00-1.10x plain sgemm; 64-row
// tiles cost 1.3-1.9x). Only vocabulary-sized matrices are tiled.
constexpr int64_t kTileFloats = int64_t(1) << 23;
// A prompt of a few tokens instead widens 1 Mi floats (4 MiB) at a time: its sgemm is too short
// for the repacking to matter, and a whole-matrix buffer is fresh memory on the first prompt,
// whose page faults took about a third of a Qwen2.5-0.5B-shape 62-token prefill on one thread.
constexpr int64_t kFewTokens = 256;
constexpr int64_t kFewTokensTileFloats = int64_t(1) << 20;
int64_t tile_rows(const FrozenWeight& w, int64_t n) {
  const int64_t floats = n <= kFewTokens ? kFewTokensTileFloats : kTileFloats;
  return std::clamp<int64_t>(floats / std::max<int64_t>(w.cols, 1), 1, w.rows);
}

void check_size(std::size_t have, int64_t rows, int64_t cols, const char* what) {
  if (rows < 0 || cols < 0 || have != static_cast<std::size_t>(rows * cols))
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(have) +
                                " values for a [" + std::to_string(rows) + ", " +
                                std::to_string(cols) + "] matrix");
}

void scale_in_place(float* y, int64_t count, float beta) {
  if (beta == 0.0f)
    std::fill(y, y + count, 0.0f);
  else if (beta != 1.0f)
    std::for_each(y, y + count, [beta](float& v) { v *= beta; });
}

// buf (rows [r0, r1) of the widened weight) += scale * B[r0:r1] A for every delta, a row at a time
// while the row is still in cache from its widening.
void add_deltas(std::span<const LowRankDelta> deltas, int64_t r0, int64_t r1, int64_t cols,
                float* buf) {
  for (int64_t r = r0; r < r1; ++r) {
    float* row = buf + (r - r0) * cols;
    for (const LowRankDelta& d : deltas)
      for (int64_t k = 0; k < d.rank; ++k) {
        const float s = d.scale * d.B[r * d.rank + k];
        const float* a = d.A + k * cols;
#pragma omp simd
        for (int64_t c = 0; c < cols; ++c) row[c] += s * a[c];
      }
  }
}

// Rows [r0, r1) of W + sum of deltas as f32 into buf ([r1 - r0, cols]). With deltas, widening
// and folding go together in L1-sized chunks of rows, one parallel loop for both: a separate
// rank-r sgemm over the whole tile would pass over it once more from memory (and BLAS threads a
// product of inner size r poorly).
void widen_rows(const FrozenWeight& w, int64_t r0, int64_t r1, std::span<const LowRankDelta> deltas,
                float* buf) {
  if (deltas.empty()) {
    w.rows_f32(r0, r1, buf);
    return;
  }
  const int64_t chunk = std::max<int64_t>(1, 8192 / std::max<int64_t>(w.cols, 1));
  parallel_for((r1 - r0 + chunk - 1) / chunk, (r1 - r0) * w.cols >= (int64_t(1) << 16),
               [&](int64_t i) {
                 const int64_t c0 = r0 + i * chunk, c1 = std::min(r1, c0 + chunk);
                 float* out = buf + (c0 - r0) * w.cols;
                 w.rows_f32(c0, c1, out);  // nested: runs on this thread
                 add_deltas(deltas, c0, c1, w.cols, out);
               });
}

void check_low_rank(std::span<const LowRankDelta> deltas, std::span<const LowRankSide> sides,
                    ComputeDType compute) {
  if (!deltas.empty() && uses_bf16(compute))
    throw std::invalid_argument("frozen matmul: low-rank deltas need f32 compute");
  if (!sides.empty() && !uses_bf16(compute))
    throw std::invalid_argument("frozen matmul: low-rank sides need bf16 compute");
}

// The whole weight as bf16 for a bf16 product: the stored values themselves for a bf16 weight,
// else rounded (f32) or dequantized then rounded (quantized) into `buf`, a tile at a time.
const uint16_t* weight_bf16(const FrozenWeight& w, std::unique_ptr<uint16_t[]>& buf) {
  if (w.format == WeightFormat::BF16) return w.bf16.data();
  buf = std::make_unique_for_overwrite<uint16_t[]>(static_cast<std::size_t>(w.rows * w.cols));
  w.rows_bf16(0, w.rows, buf.get());
  return buf.get();
}

// y = [x | coefs] [W | scale * B...]^T (XWt) or dx = [g | coefs] [W ; scale * A...] (GW) in one
// bf16 product: each side's rank-r product rides in the inner dimension, its columns after the
// frozen ones in both operands.
void bf16_product_with_sides(Bf16Product kind, const FrozenWeight& w, const float* in, int64_t n,
                             float* out, float beta, std::span<const LowRankSide> sides) {
  const bool xwt = kind == Bf16Product::XWt;
  const int64_t width = xwt ? w.cols : w.rows;
  int64_t used = width;
  for (const LowRankSide& side : sides) used += side.rank;
  const int64_t inner = (used + 31) / 32 * 32;  // zero columns up to whole AMX tile rows
  // Every value is written below, the padding explicitly: no zero-fill pass first.
  const auto input =
      std::make_unique_for_overwrite<uint16_t[]>(static_cast<std::size_t>(n * inner));
  const auto weight = std::make_unique_for_overwrite<uint16_t[]>(
      static_cast<std::size_t>(xwt ? w.rows * inner : inner * w.cols));
  round_rows_to_bf16(in, n, width, width, input.get(), inner);
  w.rows_bf16(0, w.rows, weight.get(), xwt ? inner : w.cols);
  int64_t at = width;
  for (const LowRankSide& side : sides) {
    round_rows_to_bf16(side.coef, n, side.rank, side.rank, input.get() + at, inner);
    if (xwt) {  // columns [at, at + rank) of every weight row: scale * B's row
      for (int64_t r = 0; r < w.rows; ++r)
        for (int64_t k = 0; k < side.rank; ++k)
          weight[r * inner + at + k] = f32_to_bf16(side.scale * side.factor[r * side.rank + k]);
    } else {  // rows [at, at + rank): scale * A
      for (int64_t i = 0; i < side.rank * w.cols; ++i)
        weight[at * w.cols + i] = f32_to_bf16(side.scale * side.factor[i]);
    }
    at += side.rank;
  }
  for (int64_t i = 0; i < n; ++i)
    std::fill(input.get() + i * inner + used, input.get() + (i + 1) * inner, uint16_t(0));
  if (xwt)
    for (int64_t r = 0; r < w.rows; ++r)
      std::fill(weight.get() + r * inner + used, weight.get() + (r + 1) * inner, uint16_t(0));
  else
    std::fill(weight.get() + used * w.cols, weight.get() + inner * w.cols, uint16_t(0));
  matmul_bf16_rounded(kind, weight.get(), xwt ? w.rows : inner, xwt ? inner : w.cols, input.get(),
                      n, out, beta);
}

// The factories' common start; each then moves in the storage its format reads.
FrozenWeight empty_weight(int64_t rows, int64_t cols, WeightFormat format) {
  FrozenWeight f;
  f.rows = rows;
  f.cols = cols;
  f.format = format;
  return f;
}

}  // namespace

bool uses_bf16(ComputeDType requested) {
  return requested == ComputeDType::BF16 && bf16_matmul_available();
}

ComputeDType compute_dtype_named(const std::string& name) {
  if (name == "f32") return ComputeDType::F32;
  if (name == "bf16") return ComputeDType::BF16;
  throw std::invalid_argument("compute dtype must be f32 or bf16, got \"" + name + "\"");
}

GemvActivations gemv_activations_named(const std::string& name) {
  if (name == "f32") return GemvActivations::F32;
  if (name == "int8") return GemvActivations::Int8;
  throw std::invalid_argument("decode activations must be f32 or int8, got \"" + name + "\"");
}

FrozenWeight FrozenWeight::from_f32(std::vector<float> w, int64_t rows, int64_t cols) {
  check_size(w.size(), rows, cols, "FrozenWeight::from_f32");
  FrozenWeight f = empty_weight(rows, cols, WeightFormat::F32);
  f.f32 = std::move(w);
  return f;
}

FrozenWeight FrozenWeight::from_bf16(std::vector<uint16_t> w, int64_t rows, int64_t cols) {
  check_size(w.size(), rows, cols, "FrozenWeight::from_bf16");
  FrozenWeight f = empty_weight(rows, cols, WeightFormat::BF16);
  f.bf16 = std::move(w);
  return f;
}

FrozenWeight FrozenWeight::from_quantized(QuantizedMatrix q) {
  if (static_cast<int64_t>(q.packed.size()) != q.rows * q.words_per_row() ||
      static_cast<int64_t>(q.scales.size()) != q.rows * q.groups_per_row() ||
      q.scales.size() != q.biases.size())
    throw std::invalid_argument(
        "FrozenWeight::from_quantized: packed/scales/biases sizes do not "
        "match [" +
        std::to_string(q.rows) + ", " + std::to_string(q.cols) + "]");
  FrozenWeight f = empty_weight(q.rows, q.cols, WeightFormat::Quantized);
  f.quant = std::move(q);
  return f;
}

FrozenWeight FrozenWeight::from_ggml(GgmlMatrix m) {
  if (m.rows < 0 || !m.data)
    throw std::invalid_argument("FrozenWeight::from_ggml: no data for a [" +
                                std::to_string(m.rows) + ", " + std::to_string(m.cols) +
                                "] matrix");
  FrozenWeight f = empty_weight(m.rows, m.cols, WeightFormat::Ggml);
  f.ggml = std::move(m);
  return f;
}

std::size_t FrozenWeight::stored_bytes() const {
  switch (format) {
    case WeightFormat::F32:
      return f32.size() * sizeof(float);
    case WeightFormat::BF16:
      return bf16.size() * sizeof(uint16_t);
    case WeightFormat::Quantized:
      // Scales and biases are held as f32 whatever type the file stores them in.
      return quant.packed.size() * sizeof(uint32_t) +
             (quant.scales.size() + quant.biases.size()) * sizeof(float);
    case WeightFormat::Ggml:
      return static_cast<std::size_t>(ggml.total_bytes());
  }
  return 0;
}

void FrozenWeight::rows_f32(int64_t begin, int64_t end, float* out) const {
  if (begin < 0 || end > rows || begin > end)
    throw std::out_of_range("FrozenWeight::rows_f32: rows [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") of " + std::to_string(rows));
  const auto first = static_cast<std::size_t>(begin * cols);
  const auto count = static_cast<std::size_t>((end - begin) * cols);
  switch (format) {
    case WeightFormat::F32:
      std::copy_n(f32.data() + first, count, out);
      break;
    case WeightFormat::BF16:
      convert_to_f32(DType::BF16, bf16.data() + first, count, out);
      break;
    case WeightFormat::Quantized:
      dequantize_rows(quant, begin, end, out);
      break;
    case WeightFormat::Ggml:
      ggml.rows_f32(begin, end, out);
      break;
  }
}

void FrozenWeight::rows_bf16(int64_t begin, int64_t end, uint16_t* out, int64_t ld) const {
  if (begin < 0 || end > rows || begin > end || (ld != 0 && ld < cols))
    throw std::out_of_range("FrozenWeight::rows_bf16: rows [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") of " + std::to_string(rows) + " with " +
                            std::to_string(cols) + " values each, " + std::to_string(ld) +
                            " apart");
  if (ld == 0) ld = cols;
  if (format == WeightFormat::BF16) {
    for (int64_t r = begin; r < end; ++r)
      std::copy_n(bf16.data() + r * cols, cols, out + (r - begin) * ld);
    return;
  }
  // Each thread widens a chunk of rows into a buffer that stays in cache and rounds it from there:
  // the f32 copy never exceeds a chunk per thread, and neither step waits on one thread.
  const int64_t chunk = std::max<int64_t>(1, 8192 / std::max<int64_t>(cols, 1));
  parallel_for_with_scratch(
      (end - begin + chunk - 1) / chunk, (end - begin) * cols >= (int64_t(1) << 16),
      [&] { return std::vector<float>(static_cast<std::size_t>(chunk * cols)); },
      [&](std::vector<float>& buf, int64_t i) {
        const int64_t r0 = begin + i * chunk, r1 = std::min(end, r0 + chunk);
        rows_f32(r0, r1, buf.data());  // nested: runs on this thread
        for (int64_t r = r0; r < r1; ++r)
          convert_from_f32(DType::BF16, buf.data() + (r - r0) * cols,
                           static_cast<std::size_t>(cols), out + (r - begin) * ld);
      });
}

std::vector<float> FrozenWeight::to_f32() const {
  std::vector<float> out(static_cast<std::size_t>(rows * cols));
  rows_f32(0, rows, out.data());
  return out;
}

namespace {

// The two products of a frozen weight: y = x W^T (XWt: [n, cols] -> [n, rows]) and dx = g W (GW:
// [n, rows] -> [n, cols]), each with beta on the output.
void frozen_product(Bf16Product kind, const FrozenWeight& w, const float* in, int64_t n, float* out,
                    float beta, ComputeDType compute, std::span<const LowRankDelta> deltas,
                    std::span<const LowRankSide> sides,
                    GemvActivations activations = GemvActivations::F32) {
  check_low_rank(deltas, sides, compute);
  const bool xwt = kind == Bf16Product::XWt;
  const int64_t in_width = xwt ? w.cols : w.rows, out_width = xwt ? w.rows : w.cols;
  if (n <= 0 || out_width == 0) return;
  if (in_width == 0) {
    scale_in_place(out, n * out_width, beta);
    return;
  }
  // A few tokens (generation's decode) read each weight once, from its own storage.
  if (xwt && n <= kGemvMaxTokens && deltas.empty() && !uses_bf16(compute)) {
    const GemvProduct product{&w, out, beta};
    frozen_gemv({&product, 1}, in, n, gemv_isa(), activations);
    return;
  }
  // A prompt's few dozen: rows widened a cache-sized block at a time, and no repacking of the
  // whole widened weight. f32 weights, stored as such or in a GGUF file, stay with sgemm, so that
  // both storages of one model give the same numbers.
  const bool f32_values = w.format == WeightFormat::F32 ||
                          (w.format == WeightFormat::Ggml && w.ggml.type == GgmlType::F32);
  if (xwt && n <= kShortGemmMaxTokens && deltas.empty() && !uses_bf16(compute) && !f32_values) {
    frozen_short_gemm(w, in, n, out, beta);
    return;
  }
  if (!sides.empty()) {
    bf16_product_with_sides(kind, w, in, n, out, beta, sides);
    return;
  }
  if (uses_bf16(compute)) {
    std::unique_ptr<uint16_t[]> buf;
    matmul_bf16(kind, weight_bf16(w, buf), w.rows, w.cols, in, n, out, beta);
    return;
  }
  const auto N = static_cast<int>(n), R = static_cast<int>(w.rows), C = static_cast<int>(w.cols);
  const auto I = static_cast<int>(in_width), O = static_cast<int>(out_width);
  if (w.format == WeightFormat::F32 && deltas.empty()) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, xwt ? CblasTrans : CblasNoTrans, N, O, I, 1.0f, in, I,
                w.f32.data(), C, beta, out, O);
    return;
  }
  // Widen a tile of weight rows [r0, r1), multiply, move on. For y those rows give output columns
  // [r0, r1); for dx each tile adds g[:, r0:r1] W[r0:r1, :], the first one applying beta.
  const int64_t tile = tile_rows(w, n);
  // widen_rows writes every value: no zero-filling of up to 32 MiB per product first.
  const auto buf = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(tile * w.cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile) {
    const int64_t r1 = std::min(w.rows, r0 + tile);
    const auto rows = static_cast<int>(r1 - r0);
    widen_rows(w, r0, r1, deltas, buf.get());
    if (xwt)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, rows, C, 1.0f, in, C, buf.get(), C,
                  beta, out + r0, R);
    else
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, C, rows, 1.0f, in + r0, R,
                  buf.get(), C, r0 == 0 ? beta : 1.0f, out, C);
  }
}

}  // namespace

void frozen_matmul(const FrozenWeight& w, const float* x, int64_t n, float* y, float beta,
                   ComputeDType compute, std::span<const LowRankDelta> deltas,
                   std::span<const LowRankSide> sides, GemvActivations activations) {
  frozen_product(Bf16Product::XWt, w, x, n, y, beta, compute, deltas, sides, activations);
}

void frozen_matmul_input_grad(const FrozenWeight& w, const float* g, int64_t n, float* dx,
                              float beta, ComputeDType compute,
                              std::span<const LowRankDelta> deltas,
                              std::span<const LowRankSide> sides) {
  frozen_product(Bf16Product::GW, w, g, n, dx, beta, compute, deltas, sides);
}

}  // namespace lora
