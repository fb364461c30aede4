// Optimizers over LoRA parameters (f32 master weights and state), learning-rate schedules,
// and gradient clipping.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "autograd/tape.h"

namespace lora {

struct OptimizerConfig {
  std::string name = "adamw";  // adamw | adam | sgd
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.01f;  // adamw: decoupled; adam, sgd: not applied
  float momentum = 0.0f;       // sgd
};

struct ScheduleConfig {
  std::string type = "constant";  // constant | linear | cosine
  int64_t warmup_steps = 0;       // linear ramp from warmup_init * lr to lr
  float warmup_init = 0.0f;
  int64_t total_steps = 0;         // decay horizon for linear/cosine (warmup included)
  float final_lr_fraction = 0.0f;  // decays to lr * this
};

// Learning rate for optimizer step `step` (0-based).
float learning_rate_at(const ScheduleConfig& schedule, float base_lr, int64_t step);

class Optimizer {
 public:
  Optimizer(OptimizerConfig config, std::vector<ag::Parameter*> params);
  // One update from the parameters' accumulated gradients at learning rate lr.
  void step(float lr);
  int64_t steps_taken() const { return t_; }
  const OptimizerConfig& config() const { return config_; }
  // State for checkpoints: first and second moments (sgd: momentum buffer in m, v empty).
  std::vector<Tensor>& first_moments() { return m_; }
  std::vector<Tensor>& second_moments() { return v_; }
  void set_steps_taken(int64_t t) { t_ = t; }

 private:
  OptimizerConfig config_;
  std::vector<ag::Parameter*> params_;
  std::vector<Tensor> m_, v_;
  int64_t t_ = 0;
};

// Scales all gradients so their global L2 norm is at most max_norm; returns the norm before.
float clip_grad_norm(std::span<ag::Parameter* const> params, float max_norm);
float grad_norm(std::span<ag::Parameter* const> params);

}  // namespace lora
