// dora_linear: the weight-decomposed LoRA linear (autograd/dora.h).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "autograd/dora.h"
#include "autograd/dropout.h"
#include "autograd/kernels/kernels_lora.h"

namespace lora::ag {

namespace {

constexpr int64_t kNormRows = 64;  // rows of W widened at a time
// Inference over this many tokens multiplies by the merged weight's rows (adapted_product), formed
// in double per call; fewer (decoding one token) take the factored f32 path, which rounds
// differently by about an f32 ulp but forms nothing per token.
constexpr int64_t kDirectMinTokens = 8;

void check_dora(const Tensor& x, const FrozenWeight& w, const LoraBranch& br, const Parameter& m) {
  if (!br.A || !br.B) throw std::invalid_argument("dora_linear: branch without A or B");
  const Tensor& a = br.A->value;
  const Tensor& b = br.B->value;
  if (x.rank() != 2 || x.dim(1) != w.cols)
    throw std::invalid_argument("dora_linear: input " + x.shape_str() +
                                " does not fit a weight with " + std::to_string(w.cols) +
                                " input features");
  if (a.rank() != 2 || b.rank() != 2 || a.dim(1) != w.cols || b.dim(0) != w.rows ||
      a.dim(0) != b.dim(1))
    throw std::invalid_argument("dora_linear: A " + a.shape_str() + ", B " + b.shape_str() +
                                " do not fit a [" + std::to_string(w.rows) + ", " +
                                std::to_string(w.cols) + "] weight");
  if (m.value.numel() != w.rows)
    throw std::invalid_argument("dora_linear: magnitude " + m.value.shape_str() + " for " +
                                std::to_string(w.rows) + " outputs");
}

// Rows [r0, r0 + rows) of V = W + scale B A in f32, widened from the base's storage.
void direction_rows(const FrozenWeight& w, const LowRankDelta& delta, int64_t r0, int64_t rows,
                    float* tile) {
  w.rows_f32(r0, r0 + rows, tile);
  if (delta.rank > 0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(rows), int(w.cols), int(delta.rank),
                delta.scale, delta.B + r0 * delta.rank, int(delta.rank), delta.A, int(w.cols), 1.0f,
                tile, int(w.cols));
}

// y[n, out] = x W'^T + beta * y with W' = m V / ||V|| (dora_adapted_rows) formed tile by tile and
// applied in one f32 product, as a merged model's linear is.
void adapted_product(const FrozenWeight& w, const LowRankDelta& delta, const float* m,
                     const float* x, int64_t n, float* y, float beta) {
  // Tiles of up to 4 MiB: a weight that fits is one product of the merged weight's shape.
  const int64_t tile_rows = std::clamp<int64_t>((int64_t(1) << 20) / w.cols, 1, w.rows);
  std::vector<float> tile(static_cast<std::size_t>(tile_rows * w.cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += tile_rows) {
    const int64_t rows = std::min(tile_rows, w.rows - r0);
    w.rows_f32(r0, r0 + rows, tile.data());
    dora_adapted_rows(tile.data(), rows, w.cols, delta.B + r0 * delta.rank, delta.A, delta.rank,
                      double(delta.scale), m + r0, tile.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(rows), int(w.cols), 1.0f, x,
                int(w.cols), tile.data(), int(w.cols), beta, y + r0, int(w.rows));
  }
}

// The norms in double: dora_linear divides m by them before the one rounding of g.
std::vector<double> weight_row_norms_double(const FrozenWeight& w, const LowRankDelta& delta) {
  std::vector<double> norms(static_cast<std::size_t>(w.rows));
  std::vector<float> tile(static_cast<std::size_t>(std::min(kNormRows, w.rows) * w.cols));
  for (int64_t r0 = 0; r0 < w.rows; r0 += kNormRows) {
    const int64_t rows = std::min(kNormRows, w.rows - r0);
    direction_rows(w, delta, r0, rows, tile.data());
    for (int64_t i = 0; i < rows; ++i) {
      double sum = 0.0;
      const float* row = tile.data() + i * w.cols;
      for (int64_t c = 0; c < w.cols; ++c) sum += double(row[c]) * double(row[c]);
      norms[static_cast<std::size_t>(r0 + i)] = std::sqrt(sum);
    }
  }
  return norms;
}

}  // namespace

void dora_adapted_rows(const float* w, int64_t rows, int64_t cols, const float* b, const float* a,
                       int64_t rank, double scale, const float* m, float* out) {
  std::vector<double> row(static_cast<std::size_t>(cols)), ba(static_cast<std::size_t>(cols));
  for (int64_t o = 0; o < rows; ++o) {
    // (B A)_o row by row of A (contiguous, vectorized), each entry summed over k in order.
    std::fill(ba.begin(), ba.end(), 0.0);
    for (int64_t k = 0; k < rank; ++k) {
      const double bk = double(b[o * rank + k]);
      const float* ak = a + k * cols;
      for (int64_t j = 0; j < cols; ++j) ba[j] += bk * double(ak[j]);
    }
    for (int64_t j = 0; j < cols; ++j) row[j] = double(w[o * cols + j]) + scale * ba[j];
    double sq = 0.0;
    for (double v : row) sq += v * v;
    // The ratio as the training path takes it (m over the f32 norm): a fresh adapter (B = 0,
    // m = ||W||) has g = 1 exactly and gives back W bit for bit.
    const double g = double(m[o] / float(std::sqrt(sq)));
    for (int64_t j = 0; j < cols; ++j) out[o * cols + j] = float(row[j] * g);
  }
}

std::vector<float> weight_row_norms(const FrozenWeight& w, const LowRankDelta& delta) {
  const std::vector<double> norms = weight_row_norms_double(w, delta);
  return std::vector<float>(norms.begin(), norms.end());
}

namespace {

// ||V|| per row (f32, for m's gradient) and g = m / ||V|| (divided in double, rounded once).
void magnitude_ratios(const FrozenWeight& w, const LowRankDelta& delta, const Parameter& m,
                      std::vector<float>& norm, std::vector<float>& g) {
  const std::vector<double> norm_d = weight_row_norms_double(w, delta);
  norm.assign(norm_d.begin(), norm_d.end());
  g.resize(norm_d.size());
  for (std::size_t o = 0; o < g.size(); ++o) g[o] = float(double(m.value.data[o]) / norm_d[o]);
}

}  // namespace

Var dora_linear(Tape& tape, Var x, const FrozenWeight& w, const std::vector<float>* bias,
                const LoraBranch& br, Parameter& magnitude, Var residual) {
  const OpTimer timer(tape.profile(), "dora", tape.forward_phase());
  const Tensor& xv = x->value;
  check_dora(xv, w, br, magnitude);
  const int64_t n = xv.dim(0), in = w.cols, out = w.rows, r = br.A->value.dim(0);
  if (residual && residual->value.shape != std::vector<int64_t>{n, out})
    throw std::invalid_argument("dora_linear: residual " + residual->value.shape_str() +
                                " does not fit [" + std::to_string(n) + ", " + std::to_string(out) +
                                "]");
  const ComputeDType compute = tape.compute_dtype();
  const bool dropped = br.dropout > 0.0f;
  const bool direct = !br.trainable && !dropped && !uses_bf16(compute) && n >= kDirectMinTokens;
  const bool residual_grad = residual && residual->requires_grad;
  // g = m / ||W + scale B A||, a constant of backward (see dora.h). The direct inference product
  // forms its own norms; it needs g only when a gradient flows back through it.
  std::vector<float> norm, g;
  if (!direct || x->requires_grad || residual_grad)
    magnitude_ratios(w, {br.A->value.ptr(), br.B->value.ptr(), r, br.scale}, magnitude, norm, g);

  const LowRankDelta delta{br.A->value.ptr(), br.B->value.ptr(), r, br.scale};
  Tensor y = residual ? residual->value : Tensor({n, out});
  Tensor z, u;  // kept for backward when the branch trains
  if (direct) {
    // Inference: the merged weight's product, so a merged model gives these outputs to within
    // the rounding of its stored weights.
    adapted_product(w, delta, magnitude.value.ptr(), xv.ptr(), n, y.ptr(), residual ? 1.0f : 0.0f);
    if (bias)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t o = 0; o < out; ++o) y.data[i * out + o] += (*bias)[o];
  } else {
    std::vector<float> xd;
    if (dropped) {
      xd.resize(xv.data.size());
      apply_dropout(xv.span(), br.dropout, br.dropout_seed, xd);
    }
    const float* xin = dropped ? xd.data() : xv.ptr();
    // z = x' W^T + scale x' A^T B^T, the direction's output before the magnitude (kept for dm).
    z = Tensor({n, out});
    frozen_matmul(w, xin, n, z.ptr(), 0.0f, compute);
    u = Tensor({n, r});
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(r), int(in), 1.0f, xin,
                int(in), br.A->value.ptr(), int(in), 0.0f, u.ptr(), int(r));
    // y = (residual) + x W^T - x' W^T + g * z (+ bias); without dropout the first two cancel.
    if (dropped) {
      frozen_matmul(w, xv.ptr(), n, y.ptr(), residual ? 1.0f : 0.0f, compute);
      for (std::size_t i = 0; i < y.data.size(); ++i) y.data[i] -= z.data[i];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(out), int(r), br.scale,
                u.ptr(), int(r), br.B->value.ptr(), int(r), 1.0f, z.ptr(), int(out));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o)
        y.data[i * out + o] += g[o] * z.data[i * out + o] + (bias ? (*bias)[o] : 0.0f);
  }

  Var result = tape.make(std::move(y), x->requires_grad || br.trainable || residual_grad);
  if (!result->requires_grad) return result;
  auto backward = [&tape, x, &w, result, compute, br, &magnitude, g = std::move(g),
                   norm = std::move(norm), z = std::move(z), u = std::move(u),
                   residual = residual_grad ? residual : nullptr] {
    if (result->grad.data.empty()) return;
    const float* grad = result->grad.ptr();
    if (residual) tape.accumulate_grad(residual, grad);
    const int64_t n = result->grad.dim(0), in = w.cols, out = w.rows, r = br.A->value.dim(0);
    const bool dropped = br.dropout > 0.0f;
    // gg = g * G: the gradient reaching z.
    std::vector<float> gg(result->grad.data.size());
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) gg[i * out + o] = g[o] * grad[i * out + o];
    std::vector<float> gu(static_cast<std::size_t>(n * r));
    std::vector<float> xd;
    const float* xin = x->value.ptr();
    if (dropped) {
      xd.resize(x->value.data.size());
      apply_dropout(x->value.span(), br.dropout, br.dropout_seed, xd);
      xin = xd.data();
    }
    if (br.trainable) {
      // dm_j = sum_t G_tj z_tj / ||V_j||.
      magnitude.ensure_grad();
      for (int64_t o = 0; o < out; ++o) {
        double s = 0.0;
        for (int64_t i = 0; i < n; ++i)
          s += double(grad[i * out + o]) * double(z.data[i * out + o]);
        magnitude.grad.data[o] += float(s / norm[o]);
      }
      br.A->ensure_grad();
      br.B->ensure_grad();
      kernels::lora_backward(gg.data(), xin, u.ptr(), br.A->value.ptr(), br.B->value.ptr(), n, in,
                             out, r, br.scale, gu.data(), br.A->grad.ptr(), br.B->grad.ptr());
    } else if (x->requires_grad) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(r), int(out), br.scale,
                  gg.data(), int(out), br.B->value.ptr(), int(r), 0.0f, gu.data(), int(r));
    }
    if (!x->requires_grad) return;
    float* dx = tape.grad(x).ptr();
    if (!dropped) {
      frozen_matmul_input_grad(w, gg.data(), n, dx, 1.0f, compute);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(in), int(r), 1.0f,
                  gu.data(), int(r), br.A->value.ptr(), int(in), 1.0f, dx, int(in));
      return;
    }
    // dx = G W + dropout'((g - 1) G W + gu A): the full-input base term and the dropped branch.
    frozen_matmul_input_grad(w, grad, n, dx, 1.0f, compute);
    std::vector<float> dxd(static_cast<std::size_t>(n * in));
    for (std::size_t i = 0; i < gg.size(); ++i) gg[i] -= grad[i];
    frozen_matmul_input_grad(w, gg.data(), n, dxd.data(), 0.0f, compute);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(in), int(r), 1.0f, gu.data(),
                int(r), br.A->value.ptr(), int(in), 1.0f, dxd.data(), int(in));
    std::vector<float> back(dxd.size());
    apply_dropout(dxd, br.dropout, br.dropout_seed, back);
    for (std::size_t i = 0; i < back.size(); ++i) dx[i] += back[i];
  };
  if (br.trainable)
    tape.push_backward(std::move(backward), "dora", result, {x});
  else
    tape.push_backward(std::move(backward), "dora", result);
  return result;
}

}  // namespace lora::ag
