// The optimized paths give the gradients of the plain ones.
//
// - The 4-bit dequantizer's fast path (group-hoisted, rows across threads) is bit-identical to
//   scale * code + bias from the unpacked codes.
// - The fused, vocabulary-tiled loss head (online log-sum-exp, softmax*W accumulated in the
//   forward pass) against a plain double-precision softmax cross-entropy: loss and d(hidden)
//   within 1e-4 relative, over several vocabulary tiles and row blocks, f32 and 4-bit heads.
// - The LoRA linear's fast paths (the branches folded into the widened f32 weight for many tokens,
//   or carried in a bf16 product's inner dimension, and the one-pass backward kernel for gu, dA and
//   dB) against a plain double-precision evaluation of x W^T + sum_b s_b x A_b^T B_b^T: output,
//   dx, dA and dB within 1e-4 relative (L2; output and dx 1e-2 under bf16 compute), f32, 4-bit and
//   bf16 weights, token counts on both sides of the folding threshold, two stacked branches of
//   different ranks, with and without a fused residual.
// - The register-blocked LoRA backward kernel on shapes that leave every tail (widths not a
//   multiple of 8 or 24, odd rank, odd token count) against double sums, u given or formed from x.
// - The vectorized f32 SwiGLU (forward and both input gradients) against the double formula, per
//   element within 1e-5 of the size of the terms, over gates far into both saturated tails.
// - bf16 compute for the frozen base (AMX): LoRA gradients of a whole model within 3e-2 relative
//   (L2 over all adapter gradients) of the f32 run, and the loss curve of a few AdamW steps
//   within 1e-2 relative of f32 at every step. Operands rounded to bf16 carry 2^-9 relative error
//   each; through a few layers the gradients stay within a few 1e-3 (measured), the bounds leave
//   headroom.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "autograd/cpu_features.h"
#include "autograd/dtype.h"
#include "autograd/kernels/kernel_variants.h"
#include "autograd/kernels/kernels_activation.h"
#include "autograd/kernels/kernels_lora.h"
#include "autograd/kernels/matmul_bf16.h"
#include "autograd/ops.h"
#include "autograd/quant.h"
#include "trainer/optimizer.h"
#include "trainer/random_model.h"
#include "trainer/transformer.h"

namespace lora {
namespace {

struct HeadCase {
  int64_t rows, dim, vocab;
  bool quantized;
};

// Loss and d(loss)/d(hidden) of sum_i w_i CE(h_i W^T, t_i) / normalizer, in double.
void reference_head(const std::vector<float>& h, const std::vector<float>& w, const HeadCase& c,
                    const std::vector<int32_t>& t, const std::vector<float>& wt, double norm,
                    double& loss, std::vector<double>& dh) {
  loss = 0;
  dh.assign(h.size(), 0.0);
  std::vector<double> logits(static_cast<std::size_t>(c.vocab));
  for (int64_t i = 0; i < c.rows; ++i) {
    if (wt[i] == 0.0f) continue;
    double mx = -1e300;
    for (int64_t v = 0; v < c.vocab; ++v) {
      double s = 0;
      for (int64_t d = 0; d < c.dim; ++d) s += double(h[i * c.dim + d]) * w[v * c.dim + d];
      logits[v] = s;
      mx = std::max(mx, s);
    }
    double sum = 0;
    for (double l : logits) sum += std::exp(l - mx);
    const double lse = mx + std::log(sum);
    loss += wt[i] * (lse - logits[t[i]]) / norm;
    for (int64_t v = 0; v < c.vocab; ++v) {
      const double g = wt[i] / norm * (std::exp(logits[v] - lse) - (v == t[i] ? 1.0 : 0.0));
      for (int64_t d = 0; d < c.dim; ++d) dh[i * c.dim + d] += g * w[v * c.dim + d];
    }
  }
}

void check_head(const HeadCase& c) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> w(static_cast<std::size_t>(c.vocab * c.dim)), h(c.rows * c.dim);
  for (float& v : w) v = 0.5f * nd(rng);
  for (float& v : h) v = nd(rng);
  FrozenWeight head = FrozenWeight::from_f32(w, c.vocab, c.dim);
  if (c.quantized) {
    head = FrozenWeight::from_quantized(quantize(w, c.vocab, c.dim, 4, 64));
    w = head.to_f32();  // the reference uses the values the quantized head holds
  }
  std::vector<int32_t> targets(c.rows);
  std::vector<float> weights(c.rows);
  for (int64_t i = 0; i < c.rows; ++i) {
    targets[i] = int32_t((i * 7919) % c.vocab);
    weights[i] = i % 5 == 0 ? 0.0f : 1.0f + float(i % 3);  // masked rows and uneven weights
  }
  const double norm = 0.75 * double(c.rows);
  double ref_loss;
  std::vector<double> ref_dh;
  reference_head(h, w, c, targets, weights, norm, ref_loss, ref_dh);

  ag::Tape tape;
  ag::Var hv = tape.make(Tensor({c.rows, c.dim}, h), true);
  ag::Var loss = ag::cross_entropy_head(tape, hv, head, targets, weights, float(norm));
  tape.backward(loss, 2.0f);  // a seed other than 1: the kept rows are scaled by it
  EXPECT_NEAR(loss->value.data[0], ref_loss, 1e-4 * std::abs(ref_loss));
  double max_ref = 0, max_err = 0;
  for (std::size_t i = 0; i < ref_dh.size(); ++i) {
    max_ref = std::max(max_ref, std::abs(2.0 * ref_dh[i]));
    max_err = std::max(max_err, std::abs(double(hv->grad.data[i]) - 2.0 * ref_dh[i]));
  }
  EXPECT_LE(max_err, 1e-4 * max_ref) << "max |d hidden| " << max_ref;
  for (int64_t i = 0; i < c.rows; i += 5)  // masked rows get no gradient at all
    for (int64_t d = 0; d < c.dim; ++d) ASSERT_EQ(hv->grad.data[i * c.dim + d], 0.0f);
}

TEST(FastPaths, LossHeadMatchesPlainSoftmaxOverManyVocabTiles) {
  // 4096 rows give vocabulary tiles of 1024: three tiles, the last one partial.
  check_head({4096, 16, 3000, false});
}

TEST(FastPaths, LossHeadMatchesPlainSoftmaxOverRowBlocksQuantized) {
  // More rows than one block (4096): two blocks; a 4-bit head dequantized tile by tile.
  check_head({4200, 64, 700, true});
}

TEST(FastPaths, FourBitDequantizeIsBitIdenticalToTheFormula) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int group : {32, 64, 128}) {
    const int64_t rows = 300, cols = 256;  // enough work for the threaded path
    std::vector<float> w(static_cast<std::size_t>(rows * cols));
    for (float& v : w) v = nd(rng);
    const QuantizedMatrix q = quantize(w, rows, cols, 4, group, DType::BF16);
    const std::vector<uint8_t> codes = unpack_bits(q.packed, rows * cols, 4);
    const std::vector<float> got = dequantize(q);
    for (int64_t i = 0; i < rows * cols; ++i) {
      const int64_t g = (i / cols) * q.groups_per_row() + (i % cols) / group;
      ASSERT_EQ(got[i], q.scales[g] * float(codes[i]) + q.biases[g])
          << "group " << group << " at " << i;
    }
  }
}

ModelConfig small_config() {
  ModelConfig c;
  c.model_type = "qwen2";
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.num_layers = 2;
  c.num_heads = 4;
  c.num_kv_heads = 2;
  c.head_dim = 16;
  c.vocab_size = 96;
  c.rms_norm_eps = 1e-6f;
  c.tie_word_embeddings = true;
  c.attention_bias = true;
  return c;
}

LoraAdapter all_projections(const Model& model) {
  LoraConfig lc;
  lc.rank = 4;
  lc.alpha = 8;
  lc.keys = {Proj::q, Proj::k, Proj::v, Proj::o, Proj::gate, Proj::up, Proj::down};
  LoraAdapter a = LoraAdapter::create(model, lc, 3);
  for (LoraModule& m : a.modules)  // a non-zero B so that every path carries gradient
    for (std::size_t i = 0; i < m.B.value.data.size(); ++i)
      m.B.value.data[i] = 0.01f * float(int(i % 7) - 3);
  return a;
}

struct Batch {
  int64_t batch = 2, seq = 16;
  std::vector<int32_t> ids, targets;
  std::vector<float> weights;
  explicit Batch(int64_t vocab) {
    for (int64_t i = 0; i < batch * seq; ++i) {
      ids.push_back(int32_t((i * 13 + 1) % vocab));
      targets.push_back(int32_t((i * 13 + 14) % vocab));
      weights.push_back(1.0f);
    }
  }
};

float train_step(const Model& model, LoraAdapter& adapter, const Batch& b, ComputeDType compute,
                 Optimizer* opt) {
  AdapterStack stack{{&adapter}, true, 0};
  ForwardOptions fo;
  fo.compute_dtype = compute;
  ag::Tape tape;
  ag::Var h = forward_hidden(tape, model, stack, b.ids, b.batch, b.seq, {}, fo);
  ag::Var loss =
      ag::cross_entropy_head(tape, h, model.head(), b.targets, b.weights, float(b.batch * b.seq));
  tape.backward(loss);
  if (opt) opt->step(1e-2f);
  return loss->value.data[0];
}

std::vector<float> flat_grads(LoraAdapter& a) {
  std::vector<float> g;
  for (ag::Parameter* p : a.parameters())
    g.insert(g.end(), p->grad.data.begin(), p->grad.data.end());
  return g;
}

double rel_l2(const std::vector<float>& got, const std::vector<double>& want) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < want.size(); ++i) {
    diff += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

// With bf16 compute (where the CPU has it) the branches ride in the bf16 products' inner dimension
// above the threshold: y and dx then carry bf16 rounding (2^-9 relative per operand; about 2e-3
// over these sums), while dA and dB stay f32 sums of f32 operands.
TEST(FastPaths, LoraLinearMatchesPlainDoubleReference) {
  const int64_t in = 96, out = 80;
  const int64_t ranks[2] = {8, 4};
  const float scales[2] = {2.0f, 0.5f};
  for (ComputeDType compute : {ComputeDType::F32, ComputeDType::BF16})
    for (WeightFormat format : {WeightFormat::F32, WeightFormat::Quantized, WeightFormat::BF16}) {
      for (int64_t n : {40, 300}) {  // below and above the folding threshold
        const char* stored = format == WeightFormat::F32         ? "f32"
                             : format == WeightFormat::Quantized ? "4-bit"
                                                                 : "bf16";
        SCOPED_TRACE(std::string(stored) + " weight, n=" + std::to_string(n) +
                     (uses_bf16(compute) ? ", bf16 compute" : ", f32 compute"));
        const double product_tol = uses_bf16(compute) ? 1e-2 : 1e-4;
        std::mt19937 rng(uint32_t(5 + n));
        std::normal_distribution<float> nd(0.0f, 1.0f);
        auto randv = [&](int64_t count, float sd) {
          std::vector<float> v(static_cast<std::size_t>(count));
          for (float& e : v) e = sd * nd(rng);
          return v;
        };
        std::vector<float> wv = randv(out * in, 0.1f);
        FrozenWeight w = FrozenWeight::from_f32(wv, out, in);
        if (format == WeightFormat::Quantized)
          w = FrozenWeight::from_quantized(quantize(wv, out, in, 4, 32));
        if (format == WeightFormat::BF16) {
          std::vector<uint16_t> halves(wv.size());
          convert_from_f32(DType::BF16, wv.data(), wv.size(), halves.data());
          w = FrozenWeight::from_bf16(std::move(halves), out, in);
        }
        wv = w.to_f32();  // the reference uses the values the weight holds
        const std::vector<float> xv = randv(n * in, 1.0f), rv = randv(n * out, 1.0f);
        std::vector<ag::Parameter> A(2), B(2);
        std::vector<ag::LoraBranch> branches;
        for (int b = 0; b < 2; ++b) {
          A[b].value = Tensor({ranks[b], in}, randv(ranks[b] * in, 0.2f));
          B[b].value = Tensor({out, ranks[b]}, randv(out * ranks[b], 0.2f));
          ag::LoraBranch br;
          br.A = &A[b];
          br.B = &B[b];
          br.scale = scales[b];
          branches.push_back(br);
        }
        ag::Tape tape;
        tape.set_compute_dtype(compute);
        ag::Var x = tape.make(Tensor({n, in}, xv), true);
        // The larger case also carries a fused residual (y = res + ...).
        const std::vector<float> resv = randv(n * out, 1.0f);
        ag::Var res = n > 100 ? tape.make(Tensor({n, out}, resv), true) : nullptr;
        ag::Var y = ag::linear(tape, x, w, nullptr, branches, res);
        tape.backward_from(y, Tensor({n, out}, rv));
        if (res) {
          EXPECT_EQ(res->grad.data, rv) << "d residual = dy";
        }

        // Plain double evaluation; loss = sum(y * R), so dy = R.
        std::vector<double> y_ref(static_cast<std::size_t>(n * out)), dx_ref(xv.size());
        for (int64_t i = 0; i < n; ++i)
          for (int64_t o = 0; o < out; ++o) {
            double acc = 0;
            for (int64_t c = 0; c < in; ++c) acc += double(xv[i * in + c]) * wv[o * in + c];
            y_ref[i * out + o] = acc + (res ? resv[i * out + o] : 0.0f);
          }
        for (int64_t i = 0; i < n; ++i)
          for (int64_t c = 0; c < in; ++c) {
            double acc = 0;
            for (int64_t o = 0; o < out; ++o) acc += double(rv[i * out + o]) * wv[o * in + c];
            dx_ref[i * in + c] = acc;
          }
        for (int b = 0; b < 2; ++b) {
          const int64_t r = ranks[b];
          const float* a = A[b].value.ptr();
          const float* bb = B[b].value.ptr();
          std::vector<double> u(static_cast<std::size_t>(n * r)), gu(u.size());
          for (int64_t i = 0; i < n; ++i)
            for (int64_t k = 0; k < r; ++k) {
              double su = 0, sg = 0;
              for (int64_t c = 0; c < in; ++c) su += double(xv[i * in + c]) * a[k * in + c];
              for (int64_t o = 0; o < out; ++o) sg += double(rv[i * out + o]) * bb[o * r + k];
              u[i * r + k] = su;
              gu[i * r + k] = scales[b] * sg;
            }
          std::vector<double> da(static_cast<std::size_t>(r * in)),
              db(static_cast<std::size_t>(out * r));
          for (int64_t i = 0; i < n; ++i) {
            for (int64_t o = 0; o < out; ++o) {
              double acc = 0;
              for (int64_t k = 0; k < r; ++k) {
                acc += u[i * r + k] * bb[o * r + k];
                db[o * r + k] += scales[b] * double(rv[i * out + o]) * u[i * r + k];
              }
              y_ref[i * out + o] += scales[b] * acc;
            }
            for (int64_t c = 0; c < in; ++c)
              for (int64_t k = 0; k < r; ++k) {
                da[k * in + c] += gu[i * r + k] * xv[i * in + c];
                dx_ref[i * in + c] += gu[i * r + k] * a[k * in + c];
              }
          }
          EXPECT_LT(rel_l2(A[b].grad.data, da), 1e-4) << "dA of branch " << b;
          EXPECT_LT(rel_l2(B[b].grad.data, db), 1e-4) << "dB of branch " << b;
        }
        EXPECT_LT(rel_l2(y->value.data, y_ref), product_tol) << "output";
        EXPECT_LT(rel_l2(x->grad.data, dx_ref), product_tol) << "dx";
      }
    }
}

TEST(FastPaths, LoraBackwardKernelCoversEveryTail) {
  const int64_t n = 157, in = 61, out = 45, r = 7;
  const float scale = 1.5f;
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto randv = [&](int64_t count) {
    std::vector<float> v(static_cast<std::size_t>(count));
    for (float& e : v) e = nd(rng);
    return v;
  };
  const auto g = randv(n * out), x = randv(n * in), A = randv(r * in), B = randv(out * r);
  std::vector<double> u(static_cast<std::size_t>(n * r)), gu(u.size()), da(A.size()), db(B.size());
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < r; ++k) {
      for (int64_t c = 0; c < in; ++c) u[i * r + k] += double(x[i * in + c]) * A[k * in + c];
      for (int64_t o = 0; o < out; ++o)
        gu[i * r + k] += scale * double(g[i * out + o]) * B[o * r + k];
    }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < r; ++k) {
      for (int64_t c = 0; c < in; ++c) da[k * in + c] += gu[i * r + k] * x[i * in + c];
      for (int64_t o = 0; o < out; ++o) db[o * r + k] += scale * u[i * r + k] * g[i * out + o];
    }
  std::vector<float> uf(u.begin(), u.end());
  // The CPU's own copy (null), then each instruction set's copy this machine runs.
  std::vector<const kernels::LoraLoops*> copies = {nullptr, &kernels::avx2::lora_loops()};
  if (detect_cpu_features().avx512) copies.push_back(&kernels::avx512::lora_loops());
  for (const kernels::LoraLoops* loops : copies)
    for (bool given : {true, false}) {
      SCOPED_TRACE(std::string(given ? "u given" : "u formed from x") + ", " +
                   (loops ? std::to_string(loops->lanes) + " lanes" : "the CPU's copy"));
      std::vector<float> guf(gu.size()), daf(da.size(), 0.0f), dbf(db.size(), 0.0f);
      kernels::lora_backward(g.data(), x.data(), given ? uf.data() : nullptr, A.data(), B.data(), n,
                             in, out, r, scale, guf.data(), daf.data(), dbf.data(), loops);
      EXPECT_LT(rel_l2(guf, gu), 1e-5) << "gu";
      EXPECT_LT(rel_l2(daf, da), 1e-5) << "dA";
      EXPECT_LT(rel_l2(dbf, db), 1e-5) << "dB";
    }
}

TEST(FastPaths, SwigluVectorPathMatchesTheDoubleFormula) {
  const int64_t n = 16 * 70000 + 5;  // above the threading cutoff, with a scalar tail
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> gd(-40.0f, 40.0f), ud(-2.0f, 2.0f);
  std::vector<float> gate(n), up(n), g(n), y(n), dgate(n, 0.5f), dup(n, -0.25f);
  for (int64_t i = 0; i < n; ++i) {
    gate[i] = i % 3 == 0 ? gd(rng) : gd(rng) / 8.0f;
    up[i] = ud(rng);
    g[i] = ud(rng);
  }
  kernels::swiglu_forward(gate.data(), up.data(), n, y.data());
  kernels::swiglu_backward(gate.data(), up.data(), g.data(), n, dgate.data(), dup.data());
  int64_t bad = 0;
  // Relative to the size of the terms summed (a sum near zero has no relative precision in f32).
  auto close = [&](double got, double want, double scale) {
    if (std::abs(got - want) > 1e-5 * scale + 1e-30) ++bad;
  };
  for (int64_t i = 0; i < n; ++i) {
    const double x = gate[i], s = 1.0 / (1.0 + std::exp(-x)), gu = double(g[i]) * up[i];
    close(y[i], x * s * up[i], std::abs(x * s * up[i]));
    close(dgate[i], 0.5 + gu * s * (1.0 + x * (1.0 - s)),
          0.5 + std::abs(gu * s) * (1.0 + std::abs(x * (1.0 - s))));
    close(dup[i], -0.25 + double(g[i]) * x * s, 0.25 + std::abs(double(g[i]) * x * s));
  }
  EXPECT_EQ(bad, 0) << "of " << 3 * n << " values";
  // Overwriting the inputs with their own gradients (the path a released tape takes) gives the
  // same values as adding into zeros.
  std::vector<float> zero_gate(n, 0.0f), zero_up(n, 0.0f);
  kernels::swiglu_backward(gate.data(), up.data(), g.data(), n, zero_gate.data(), zero_up.data());
  kernels::swiglu_backward(gate.data(), up.data(), g.data(), n, gate.data(), up.data(),
                           /*accumulate=*/false);
  EXPECT_EQ(gate, zero_gate);
  EXPECT_EQ(up, zero_up);
}

TEST(FastPaths, Bf16GradientsMatchF32WithinBound) {
  if (!bf16_matmul_available()) GTEST_SKIP() << "no native bf16 matmul: bf16 runs as f32 here";
  for (int bits : {0, 4}) {
    SCOPED_TRACE(bits ? "4-bit base" : "f32 base");
    const Model model = make_random_model(small_config(), 21, bits);
    const Batch b(model.config.vocab_size);
    LoraAdapter a32 = all_projections(model), a16 = all_projections(model);
    const float l32 = train_step(model, a32, b, ComputeDType::F32, nullptr);
    const float l16 = train_step(model, a16, b, ComputeDType::BF16, nullptr);
    EXPECT_NEAR(l16, l32, 1e-2 * std::abs(l32));
    const auto g32 = flat_grads(a32), g16 = flat_grads(a16);
    ASSERT_EQ(g32.size(), g16.size());
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < g32.size(); ++i) {
      diff += double(g16[i] - g32[i]) * (g16[i] - g32[i]);
      norm += double(g32[i]) * g32[i];
    }
    ASSERT_GT(norm, 0.0);
    const double rel = std::sqrt(diff / norm);
    EXPECT_LT(rel, 3e-2);
    EXPECT_GT(rel, 0.0) << "bf16 requested but the products ran in f32";
    RecordProperty(bits ? "rel_grad_error_q4" : "rel_grad_error_f32", std::to_string(rel));
  }
}

TEST(FastPaths, Bf16LossCurveStaysWithinNoiseOfF32) {
  if (!bf16_matmul_available()) GTEST_SKIP() << "no native bf16 matmul: bf16 runs as f32 here";
  const Model model = make_random_model(small_config(), 22);
  const Batch b(model.config.vocab_size);
  LoraAdapter a32 = all_projections(model), a16 = all_projections(model);
  Optimizer o32(OptimizerConfig{}, a32.parameters()), o16(OptimizerConfig{}, a16.parameters());
  std::vector<float> c32, c16;
  for (int step = 0; step < 8; ++step) {
    c32.push_back(train_step(model, a32, b, ComputeDType::F32, &o32));
    c16.push_back(train_step(model, a16, b, ComputeDType::BF16, &o16));
    EXPECT_NEAR(c16.back(), c32.back(), 1e-2 * std::abs(c32.back())) << "step " << step;
  }
  EXPECT_LT(c32.back(), c32.front());  // it trains (same batch every step)
  EXPECT_LT(c16.back(), c16.front());
}

}  // namespace
}  // namespace lora
