// A training run whose numbers leave the finite range (inf, NaN) stops at the step where it
// happens, saying where the last good state is; the writers refuse such values too
// (trainer/io/finite_values.h).
#pragma once
#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "trainer/lora.h"
#include "trainer/setting_error.h"

namespace lora {

// A training run whose loss or gradient norm stopped being finite.
// Its advice: a lower learning_rate, or grad_clip.
class DivergedError : public AdvisedError {
 public:
  DivergedError(int64_t step, std::string problem, std::string lead,
                std::vector<SettingChanges> alternatives)
      : AdvisedError(std::move(problem), std::move(lead), std::move(alternatives)), step_(step) {}
  int64_t step() const { return step_; }

 private:
  int64_t step_;
};

// The first module whose low-rank update scale * B A has left the f32 range after an optimizer
// step ("model.layers.3.self_attn.q_proj"), or "" when every update is finite. The bound used,
// scale * max_i sum_k |B_ik| * max |A|, is reached only by values around 1e19 (healthy adapters
// stay below 1e3), and it catches what the loss does not: a base whose residual stream overflows
// normalizes to zero and trains to the uniform distribution with a finite loss and gradient.
std::string overflowing_module(const LoraAdapter& adapter);

// Checks optimizer step `step`: its loss and gradient norm (before clipping) and the adapter it
// left. When one is not finite, or the gradient is exactly zero under a loss above 1e-3 (the
// activations overflowed: see overflowing_module), throws DivergedError naming the step, the
// values, the last complete checkpoint under `adapter_dir` (or that there is none) and what to
// change: a learning rate lower than `learning_rate`, or gradient clipping.
void check_step_finite(int64_t step, double loss, double grad_norm, const LoraAdapter& adapter,
                       const std::filesystem::path& adapter_dir, double learning_rate);

}  // namespace lora
