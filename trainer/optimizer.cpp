#include "trainer/optimizer.h"

#include <cmath>
#include <numbers>
#include <stdexcept>

namespace lora {

float learning_rate_at(const ScheduleConfig& schedule, float base_lr, int64_t step) {
  if (schedule.type != "constant" && schedule.type != "linear" && schedule.type != "cosine")
    throw std::invalid_argument("unknown learning-rate schedule '" + schedule.type +
                                "' (expected constant, linear or cosine)");
  if (step < 0) step = 0;
  const int64_t warmup = std::max<int64_t>(schedule.warmup_steps, 0);
  // Warmup: a linear ramp from warmup_init * lr at step 0 to lr at step `warmup`.
  if (step < warmup) {
    const double frac = double(step) / double(warmup);
    return float(base_lr * (schedule.warmup_init + (1.0 - schedule.warmup_init) * frac));
  }
  if (schedule.type == "constant") return base_lr;
  // Decay over the steps after warmup, from lr to lr * final_lr_fraction, then held there.
  const int64_t decay_steps = schedule.total_steps - warmup;
  const double frac =
      decay_steps <= 0 ? 1.0 : std::min(1.0, double(step - warmup) / double(decay_steps));
  const double final = schedule.final_lr_fraction;
  const double shape =
      schedule.type == "linear" ? 1.0 - frac : 0.5 * (1.0 + std::cos(std::numbers::pi * frac));
  return float(base_lr * (final + (1.0 - final) * shape));
}

Optimizer::Optimizer(OptimizerConfig config, std::vector<ag::Parameter*> params)
    : config_(std::move(config)), params_(std::move(params)) {
  const bool adam = config_.name == "adamw" || config_.name == "adam";
  if (!adam && config_.name != "sgd")
    throw std::invalid_argument("unknown optimizer '" + config_.name +
                                "' (expected adamw, adam or sgd)");
  for (ag::Parameter* p : params_) {
    m_.emplace_back(p->value.shape);
    if (adam) v_.emplace_back(p->value.shape);
  }
}

void Optimizer::step(float lr) {
  ++t_;
  const bool sgd = config_.name == "sgd";
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double bias1 = 1.0 - std::pow(b1, double(t_));
  const double bias2 = 1.0 - std::pow(b2, double(t_));
  const float step_size = float(lr / bias1);
  const float sqrt_bias2 = float(std::sqrt(bias2));
  const float decay = config_.name == "adamw" ? 1.0f - lr * config_.weight_decay : 1.0f;
  for (std::size_t i = 0; i < params_.size(); ++i) {
    ag::Parameter& p = *params_[i];
    p.ensure_grad();
    float* w = p.value.ptr();
    const float* g = p.grad.ptr();
    float* m = m_[i].ptr();
    const int64_t n = p.value.numel();
    if (sgd) {
      // torch.optim.SGD: the buffer starts as the first gradient, then buf = momentum*buf + g.
      for (int64_t j = 0; j < n; ++j) {
        float d = g[j];
        if (config_.momentum != 0.0f) {
          m[j] = t_ == 1 ? g[j] : config_.momentum * m[j] + g[j];
          d = m[j];
        }
        w[j] -= lr * d;
      }
    } else {
      float* v = v_[i].ptr();
      const float fb1 = config_.beta1, fb2 = config_.beta2;
      for (int64_t j = 0; j < n; ++j) {
        w[j] *= decay;  // decoupled weight decay (adamw only; 1 otherwise), as torch.optim.AdamW
        m[j] = fb1 * m[j] + (1.0f - fb1) * g[j];
        v[j] = fb2 * v[j] + (1.0f - fb2) * g[j] * g[j];
        const float denom = std::sqrt(v[j]) / sqrt_bias2 + config_.eps;
        w[j] -= step_size * m[j] / denom;
      }
    }
    p.grad.zero();
  }
}

float grad_norm(std::span<ag::Parameter* const> params) {
  double sum = 0.0;
  for (const ag::Parameter* p : params)
    for (float g : p->grad.data) sum += double(g) * double(g);
  return float(std::sqrt(sum));
}

float clip_grad_norm(std::span<ag::Parameter* const> params, float max_norm) {
  const float norm = grad_norm(params);
  if (max_norm > 0.0f && norm > max_norm) {
    // torch.nn.utils.clip_grad_norm_'s factor, with its small epsilon.
    const float factor = max_norm / (norm + 1e-6f);
    for (ag::Parameter* p : params)
      for (float& g : p->grad.data) g *= factor;
  }
  return norm;
}

}  // namespace lora
