#include "trainer/train_step.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/data_parallel.h"

namespace lora {

namespace {

// The one place where the step's gradients become complete: a single process holds every
// micro-batch already; data-parallel ranks sum their losses and gradients here, before the loss is
// checked and the gradients are clipped and applied.
void reduce_gradients(TrainRun& run, StepResult& result) {
  result.loss = exchange_step(result.micro_losses, run.exchange, run.comm);
}

void stop_on_non_finite(int64_t step, double loss) {
  if (!std::isfinite(loss))
    throw std::runtime_error("step " + std::to_string(step) + ": the loss is not finite (" +
                             std::to_string(loss) + "); lower --learning-rate");
}

}  // namespace

StepResult accumulate_gradients(TrainRun& run, int64_t step) {
  LocalStep local =
      accumulate_shares(run.step_setup(), step, run.state.cursor, run.exchange, run.comm);
  StepResult r;
  r.trained_tokens = local.trained_tokens;
  r.tokens = local.tokens;
  for (double l : local.micro_losses) r.loss += l;
  r.micro_losses = std::move(local.micro_losses);
  return r;
}

StepResult train_step(TrainRun& run, int64_t step, float lr) {
  StepResult r = accumulate_gradients(run, step);
  reduce_gradients(run, r);
  stop_on_non_finite(step, r.loss);
  const float clip = float(run.options.grad_clip);
  r.grad_norm = clip > 0 ? clip_grad_norm(run.params, clip) : grad_norm(run.params);
  run.optimizer.step(lr);
  run.state.step = step;
  run.state.trained_tokens += r.trained_tokens;
  run.state.window_loss += r.loss * double(r.trained_tokens);
  run.state.window_trained += r.trained_tokens;
  return r;
}

}  // namespace lora
