// DoRA on a frozen linear (autograd/dora.h): at initialization (m = ||W||, B = 0) it is the base
// linear; its gradients equal central differences of a double-precision reference in which the
// norm ||W + scale B A|| is held constant (as PEFT detaches it), with and without dropout, bias
// and residual, on f32 and 4-bit bases; and y and the gradients of x, m, A and B match torch
// running PEFT's DoRA formulas (scripts/torch_dora_grad.py) within 1e-4 on f32, bf16 and 4-bit
// bases.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "autograd/dora.h"
#include "autograd/dropout.h"
#include "autograd/dtype.h"
#include "autograd/quant.h"
#include "tests/gradcheck_util.h"
#include "tests/support/test_support.h"
#include "trainer/io/safetensors.h"

namespace lora {
namespace {

using test::max_rel_error;
using test::numeric_grad;
using test::random_values;
using test::to_float;

constexpr double kTol = 1e-4;

struct DoraCase {
  int64_t n = 5, in = 64, out = 6, r = 3;
  std::vector<float> w = to_float(random_values(6 * 64, 40));
  std::vector<float> bias = to_float(random_values(6, 41));
  std::vector<double> x = random_values(5 * 64, 42), a = random_values(3 * 64, 43, -0.2, 0.2),
                      b = random_values(6 * 3, 44, -0.2, 0.2), m = random_values(6, 45, 2.0, 5.0),
                      res = random_values(5 * 6, 46), rr = random_values(5 * 6, 47);
  float scale = 1.5f, p = 0.0f;
  uint64_t seed = 7;
  bool use_bias = true, use_residual = true;

  double keep(int64_t i) const {
    if (p <= 0.0f) return 1.0;
    return ag::dropout_keeps(seed, uint64_t(i), p) ? 1.0 / (1.0 - p) : 0.0;
  }

  // sum(y * rr) in double, y = x W^T + bias + (g - 1) x'W^T + g scale x'A^T B^T (+ residual),
  // g = m / ||W + scale B0 A0||: the norm from the unperturbed A, B (held constant).
  double loss(std::span<const float> weight, const std::vector<double>& xs,
              const std::vector<double>& as, const std::vector<double>& bs,
              const std::vector<double>& ms) const {
    std::vector<double> g(out);
    for (int64_t o = 0; o < out; ++o) {
      double sq = 0;
      for (int64_t j = 0; j < in; ++j) {
        double v = weight[o * in + j];
        for (int64_t k = 0; k < r; ++k) v += scale * b[o * r + k] * a[k * in + j];
        sq += v * v;
      }
      g[o] = ms[o] / std::sqrt(sq);
    }
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      std::vector<double> u(r, 0.0);
      for (int64_t k = 0; k < r; ++k)
        for (int64_t j = 0; j < in; ++j) u[k] += xs[i * in + j] * keep(i * in + j) * as[k * in + j];
      for (int64_t o = 0; o < out; ++o) {
        double full = 0, dropped = 0, low = 0;
        for (int64_t j = 0; j < in; ++j) {
          full += xs[i * in + j] * weight[o * in + j];
          dropped += xs[i * in + j] * keep(i * in + j) * weight[o * in + j];
        }
        for (int64_t k = 0; k < r; ++k) low += u[k] * bs[o * r + k];
        double y = full + (g[o] - 1) * dropped + g[o] * scale * low;
        if (use_bias) y += bias[o];
        if (use_residual) y += res[i * out + o];
        total += y * rr[i * out + o];
      }
    }
    return total;
  }

  struct Run {
    ag::Parameter A, B, M;
    std::vector<float> y, dx, dres;
  };

  Run run(const FrozenWeight& fw) const {
    Run out_run{{Tensor({r, in}, to_float(a)), {}},
                {Tensor({out, r}, to_float(b)), {}},
                {Tensor({out}, to_float(m)), {}},
                {},
                {},
                {}};
    ag::Tape tape;
    ag::Var xv = tape.make(Tensor({n, in}, to_float(x)), true);
    ag::Var rv = use_residual ? tape.make(Tensor({n, out}, to_float(res)), true) : nullptr;
    const ag::LoraBranch br{&out_run.A, &out_run.B, scale, p, seed, true};
    ag::Var y = ag::dora_linear(tape, xv, fw, use_bias ? &bias : nullptr, br, out_run.M, rv);
    out_run.y = y->value.data;
    tape.backward_from(y, Tensor({n, out}, to_float(rr)));
    out_run.dx = xv->grad.data;
    if (rv) out_run.dres = rv->grad.data;
    return out_run;
  }

  void check_finite_differences(const FrozenWeight& fw) const {
    const std::vector<float> dense = fw.to_f32();
    const Run got = run(fw);
    double fwd = 0;
    for (std::size_t i = 0; i < rr.size(); ++i) fwd += double(got.y[i]) * rr[i];
    const double want = loss(dense, x, a, b, m);
    EXPECT_NEAR(fwd, want, 1e-5 * std::abs(want) + 1e-4);
    // Linear in each input separately (the norm is constant): central differences are exact up
    // to rounding with a large step.
    const double h = 0.25;
    EXPECT_LT(
        max_rel_error(got.dx, numeric_grad([&](auto& v) { return loss(dense, v, a, b, m); }, x, h)),
        kTol);
    EXPECT_LT(max_rel_error(got.A.grad.data,
                            numeric_grad([&](auto& v) { return loss(dense, x, v, b, m); }, a, h)),
              kTol);
    EXPECT_LT(max_rel_error(got.B.grad.data,
                            numeric_grad([&](auto& v) { return loss(dense, x, a, v, m); }, b, h)),
              kTol);
    EXPECT_LT(max_rel_error(got.M.grad.data,
                            numeric_grad([&](auto& v) { return loss(dense, x, a, b, v); }, m, h)),
              kTol);
    if (use_residual) {
      EXPECT_LT(max_rel_error(got.dres, rr), 1e-7);
    }
  }
};

TEST(Dora, RowNormsOfQuantizedBaseComeFromDequantizedValues) {
  DoraCase c;
  const FrozenWeight q = FrozenWeight::from_quantized(quantize(c.w, c.out, c.in, 4, 32));
  const std::vector<float> dense = q.to_f32();
  const auto a = to_float(c.a), b = to_float(c.b);
  const auto norms = ag::weight_row_norms(q, {a.data(), b.data(), c.r, c.scale});
  for (int64_t o = 0; o < c.out; ++o) {
    double sq = 0;
    for (int64_t j = 0; j < c.in; ++j) {
      double v = dense[o * c.in + j];
      for (int64_t k = 0; k < c.r; ++k) v += c.scale * b[o * c.r + k] * a[k * c.in + j];
      sq += v * v;
    }
    EXPECT_NEAR(norms[o], std::sqrt(sq), 1e-5 * std::sqrt(sq)) << o;
  }
}

TEST(Dora, AtInitializationItIsTheBaseLinear) {
  DoraCase c;
  c.b.assign(c.b.size(), 0.0);
  const FrozenWeight fw = FrozenWeight::from_f32(c.w, c.out, c.in);
  const auto norms = ag::weight_row_norms(fw, {});
  c.m.assign(norms.begin(), norms.end());
  c.use_residual = false;
  const auto got = c.run(fw).y;
  for (int64_t i = 0; i < c.n; ++i)
    for (int64_t o = 0; o < c.out; ++o) {
      double y = c.bias[o];
      for (int64_t j = 0; j < c.in; ++j) y += c.x[i * c.in + j] * c.w[o * c.in + j];
      EXPECT_NEAR(got[i * c.out + o], y, 1e-5 * (1 + std::abs(y)));
    }
}

TEST(Dora, GradientsMatchFiniteDifferencesF32) {
  DoraCase c;
  c.check_finite_differences(FrozenWeight::from_f32(c.w, c.out, c.in));
}

TEST(Dora, GradientsMatchFiniteDifferencesWithDropout) {
  DoraCase c;
  c.p = 0.3f;
  c.check_finite_differences(FrozenWeight::from_f32(c.w, c.out, c.in));
}

TEST(Dora, GradientsMatchFiniteDifferences4BitNoBiasNoResidual) {
  DoraCase c;
  c.use_bias = false;
  c.use_residual = false;
  c.p = 0.2f;
  c.check_finite_differences(FrozenWeight::from_quantized(quantize(c.w, c.out, c.in, 4, 32)));
}

// One case for torch: the inputs written to `in`, loracpp's results kept to compare.
struct TorchCase {
  std::string tag;
  DoraCase::Run run;
  std::vector<float> y;  // loracpp's y without the residual (not part of PEFT's layer)
};

TorchCase write_torch_case(const DoraCase& c, const FrozenWeight& fw, const std::string& tag,
                           const std::filesystem::path& in) {
  TorchCase tc{tag, c.run(fw), {}};
  tc.y = tc.run.y;
  for (std::size_t i = 0; i < tc.y.size(); ++i) tc.y[i] -= float(c.res[i]);
  std::vector<float> keep(c.x.size());
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = float(c.keep(int64_t(i)));
  const std::vector<TensorData> tensors = {TensorData::from_f32("W", {c.out, c.in}, fw.to_f32()),
                                           TensorData::from_f32("bias", {c.out}, c.bias),
                                           TensorData::from_f32("x", {c.n, c.in}, to_float(c.x)),
                                           TensorData::from_f32("keep", {c.n, c.in}, keep),
                                           TensorData::from_f32("A", {c.r, c.in}, to_float(c.a)),
                                           TensorData::from_f32("B", {c.out, c.r}, to_float(c.b)),
                                           TensorData::from_f32("m", {c.out}, to_float(c.m)),
                                           TensorData::from_f32("R", {c.n, c.out}, to_float(c.rr))};
  char scale[32], p[32];
  std::snprintf(scale, sizeof scale, "%.9g", double(c.scale));
  std::snprintf(p, sizeof p, "%.9g", double(c.p));
  write_safetensors(in, tensors, {{"scale", scale}, {"dropout", p}});
  return tc;
}

// torch, running PEFT's DoRA formulas on the same inputs (one process for all cases).
TEST(Dora, MatchesTorchPeftFormulasOnF32Bf16And4BitBases) {
  LORA_REQUIRE_TORCH();
  test::TempDir tmp("dora_torch");
  std::vector<TorchCase> cases;
  std::vector<std::string> argv = {test::torch_python(),
                                   std::string(LORA_SOURCE_DIR) + "/scripts/torch_dora_grad.py"};
  for (float p : {0.0f, 0.25f}) {
    DoraCase c;
    c.p = p;
    std::vector<uint16_t> bf(c.w.size());
    for (std::size_t i = 0; i < bf.size(); ++i) bf[i] = f32_to_bf16(c.w[i]);
    const std::vector<std::pair<std::string, FrozenWeight>> bases = {
        {"f32", FrozenWeight::from_f32(c.w, c.out, c.in)},
        {"bf16", FrozenWeight::from_bf16(bf, c.out, c.in)},
        {"q4", FrozenWeight::from_quantized(quantize(c.w, c.out, c.in, 4, 32))}};
    for (const auto& [name, fw] : bases) {
      const std::string tag = name + (p > 0 ? "-dropout" : "");
      cases.push_back(write_torch_case(c, fw, tag, tmp / (tag + ".in")));
      argv.push_back((tmp / (tag + ".in")).string());
      argv.push_back((tmp / (tag + ".out")).string());
    }
  }
  const auto res = test::run_program(argv);
  ASSERT_EQ(res.exit_code, 0) << res.err;
  for (const auto& tc : cases) {
    const auto torch = SafetensorsFile::open(tmp / (tc.tag + ".out"));
    EXPECT_LT(max_rel_error(tc.y, torch.read_f32("y")), kTol) << tc.tag;
    EXPECT_LT(max_rel_error(tc.run.dx, torch.read_f32("grad.x")), kTol) << tc.tag;
    EXPECT_LT(max_rel_error(tc.run.A.grad.data, torch.read_f32("grad.A")), kTol) << tc.tag;
    EXPECT_LT(max_rel_error(tc.run.B.grad.data, torch.read_f32("grad.B")), kTol) << tc.tag;
    EXPECT_LT(max_rel_error(tc.run.M.grad.data, torch.read_f32("grad.m")), kTol) << tc.tag;
  }
}

}  // namespace
}  // namespace lora
