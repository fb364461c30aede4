#include "trainer/train_step.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/data_parallel.h"
#include "trainer/finite_guard.h"

namespace lora {

namespace {

// The one place where the step's gradients become complete: a single process holds every
// micro-batch already; data-parallel ranks sum their losses and gradients here, before the loss is
// checked and the gradients are clipped and applied.
void reduce_gradients(TrainRun& run, StepResult& result) {
  result.loss = exchange_step(result.micro_losses, run.exchange, run.comm);
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
  const float clip = float(run.options.grad_clip);
  r.grad_norm = clip > 0 ? clip_grad_norm(run.params, clip) : grad_norm(run.params);
  run.optimizer.step(lr);
  // The same on every rank: the loss and the gradients are the reduced ones.
  check_step_finite(step, r.loss, r.grad_norm, run.adapter, run.options.adapter_path,
                    run.options.learning_rate);
  run.state.step = step;
  run.state.trained_tokens += r.trained_tokens;
  run.state.window_loss += r.loss * double(r.trained_tokens);
  run.state.window_trained += r.trained_tokens;
  return r;
}

}  // namespace lora
