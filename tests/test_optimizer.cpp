// Optimizers, schedules and clipping against values computed independently here in double
// precision from the published update rules (torch.optim's AdamW/Adam/SGD), and hand-worked steps.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "trainer/optimizer.h"

namespace lora {
namespace {

ag::Parameter make_param(std::vector<float> values) {
  ag::Parameter p;
  const int64_t n = int64_t(values.size());
  p.value = Tensor({n}, std::move(values));
  p.zero_grad();
  return p;
}

// Gradients that change from step to step: g_t[i] = sin(t + i) * (i + 1).
float grad_at(int t, std::size_t i) { return float(std::sin(double(t + i)) * double(i + 1)); }

// Adam/AdamW in double, written from the algorithm (decoupled decay for AdamW).
std::vector<double> reference_adam(std::vector<double> p, int steps, double lr, double b1,
                                   double b2, double eps, double wd, bool decoupled) {
  std::vector<double> m(p.size()), v(p.size());
  for (int t = 1; t <= steps; ++t)
    for (std::size_t i = 0; i < p.size(); ++i) {
      const double g = grad_at(t, i);
      if (decoupled) p[i] *= 1 - lr * wd;
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double mhat = m[i] / (1 - std::pow(b1, t)), vhat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * mhat / (std::sqrt(vhat) + eps);
    }
  return p;
}

void run_steps(Optimizer& opt, ag::Parameter& p, int steps, float lr) {
  for (int t = 1; t <= steps; ++t) {
    for (std::size_t i = 0; i < p.grad.data.size(); ++i) p.grad.data[i] = grad_at(t, i);
    opt.step(lr);
  }
}

TEST(Optimizer, AdamWMatchesReference) {
  const std::vector<float> init = {0.5f, -1.25f, 2.0f, 0.0f, 3.5f};
  ag::Parameter p = make_param(init);
  OptimizerConfig cfg;  // adamw, betas 0.9/0.999, eps 1e-8, wd 0.01
  cfg.weight_decay = 0.1f;
  Optimizer opt(cfg, {&p});
  run_steps(opt, p, 5, 0.01f);
  const auto want =
      reference_adam({init.begin(), init.end()}, 5, 0.01, 0.9, 0.999, 1e-8, 0.1, true);
  for (std::size_t i = 0; i < init.size(); ++i)
    EXPECT_NEAR(p.value.data[i], want[i], 4e-7 * std::max(1.0, std::abs(want[i])));  // f32 rounding
  EXPECT_EQ(opt.steps_taken(), 5);
  for (float g : p.grad.data) EXPECT_EQ(g, 0.0f);  // the step zeroes the gradients
}

TEST(Optimizer, AdamHasNoWeightDecay) {
  const std::vector<float> init = {1.0f, -2.0f, 0.25f};
  ag::Parameter p = make_param(init);
  OptimizerConfig cfg;
  cfg.name = "adam";
  cfg.weight_decay = 0.5f;  // ignored by plain adam
  cfg.beta1 = 0.8f;
  cfg.beta2 = 0.99f;
  Optimizer opt(cfg, {&p});
  run_steps(opt, p, 4, 0.05f);
  const auto want = reference_adam({init.begin(), init.end()}, 4, 0.05, 0.8, 0.99, 1e-8, 0, false);
  for (std::size_t i = 0; i < init.size(); ++i) EXPECT_NEAR(p.value.data[i], want[i], 5e-7);
}

TEST(Optimizer, FirstAdamWStepIsDecayPlusSignStep) {
  // Hand-worked: after one step m^ = g and v^ = g^2, so the update is lr * g / (|g| + eps).
  ag::Parameter p = make_param({1.0f, -1.0f});
  p.grad.data = {0.3f, -2.0f};
  OptimizerConfig cfg;
  cfg.weight_decay = 0.1f;
  Optimizer opt(cfg, {&p});
  opt.step(0.1f);
  EXPECT_NEAR(p.value.data[0], 1.0 * (1 - 0.01) - 0.1, 1e-6);
  EXPECT_NEAR(p.value.data[1], -1.0 * (1 - 0.01) + 0.1, 1e-6);
}

TEST(Optimizer, SgdWithMomentum) {
  ag::Parameter p = make_param({1.0f, 2.0f});
  OptimizerConfig cfg;
  cfg.name = "sgd";
  cfg.momentum = 0.9f;
  Optimizer opt(cfg, {&p});
  // Hand-worked, g = (1, -1) twice: buf1 = g, p1 = p0 - lr g; buf2 = 0.9 g + g, p2 = p1 - lr 1.9 g.
  for (int t = 0; t < 2; ++t) {
    p.grad.data = {1.0f, -1.0f};
    opt.step(0.5f);
  }
  EXPECT_NEAR(p.value.data[0], 1.0 - 0.5 - 0.95, 1e-6);
  EXPECT_NEAR(p.value.data[1], 2.0 + 0.5 + 0.95, 1e-6);
}

TEST(Optimizer, PlainSgdIsMinusLrTimesGrad) {
  ag::Parameter p = make_param({0.25f, -0.75f});
  p.grad.data = {2.0f, 4.0f};
  OptimizerConfig cfg;
  cfg.name = "sgd";
  Optimizer opt(cfg, {&p});
  opt.step(0.125f);
  EXPECT_EQ(p.value.data[0], 0.0f);
  EXPECT_EQ(p.value.data[1], -1.25f);
}

TEST(Optimizer, UnknownNameIsAnError) {
  EXPECT_THROW(Optimizer(OptimizerConfig{.name = "lion"}, {}), std::invalid_argument);
}

TEST(Schedule, WarmupThenDecay) {
  ScheduleConfig s;
  s.warmup_steps = 10;
  s.warmup_init = 0.1f;
  s.total_steps = 110;
  s.final_lr_fraction = 0.2f;
  const float lr = 1e-3f;
  s.type = "constant";
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 0), 1e-4f);
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 5), 1e-3f * (0.1f + 0.9f * 0.5f));
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 10), lr);
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 1000), lr);
  s.type = "linear";
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 10), lr);
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 60), lr * 0.6f);  // halfway from 1 to 0.2
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 110), lr * 0.2f);
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 500), lr * 0.2f);
  s.type = "cosine";
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 10), lr);
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 60), lr * 0.6f);
  EXPECT_NEAR(learning_rate_at(s, lr, 35),
              lr * (0.2 + 0.8 * 0.5 * (1 + std::cos(std::numbers::pi / 4))), 1e-10);
  EXPECT_FLOAT_EQ(learning_rate_at(s, lr, 110), lr * 0.2f);
  s.type = "step";
  EXPECT_THROW(learning_rate_at(s, lr, 0), std::invalid_argument);
}

TEST(Clip, GlobalNormAcrossParameters) {
  ag::Parameter a = make_param({0, 0}), b = make_param({0});
  a.grad.data = {3.0f, 0.0f};
  b.grad.data = {4.0f};
  std::vector<ag::Parameter*> params = {&a, &b};
  EXPECT_FLOAT_EQ(grad_norm(params), 5.0f);
  EXPECT_FLOAT_EQ(clip_grad_norm(params, 10.0f), 5.0f);  // under the limit: untouched
  EXPECT_EQ(a.grad.data[0], 3.0f);
  EXPECT_FLOAT_EQ(clip_grad_norm(params, 1.0f), 5.0f);
  EXPECT_NEAR(a.grad.data[0], 0.6, 1e-6);
  EXPECT_NEAR(b.grad.data[0], 0.8, 1e-6);
  EXPECT_NEAR(grad_norm(params), 1.0, 1e-6);
}

}  // namespace
}  // namespace lora
