#include "trainer/train_step.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/batch_loss.h"

namespace lora {

namespace {

// A single process holds every micro-batch of the step, so its accumulated gradients are already
// the step's. Anything that splits a step's batches (across processes) combines them here, before
// the loss is checked and the gradients are clipped and applied.
void reduce_gradients(TrainRun& /*run*/, StepResult& /*result*/) {}

void stop_on_non_finite(int64_t step, double loss) {
  if (!std::isfinite(loss))
    throw std::runtime_error("step " + std::to_string(step) + ": the loss is not finite (" +
                             std::to_string(loss) + "); lower --learning-rate");
}

}  // namespace

StepResult accumulate_gradients(TrainRun& run, int64_t step) {
  const TrainOptions& o = run.options;
  // The micro-batches of this step, so the loss can be normalized by all their trained tokens.
  std::vector<data::Batch> micro;
  StepResult r;
  for (int64_t a = 0; a < o.grad_accumulation_steps; ++a) {
    micro.push_back(run.train_plan.next(run.state.cursor));
    r.trained_tokens += micro.back().trained_tokens;
    r.tokens += micro.back().tokens;
  }
  for (ag::Parameter* p : run.params) p->zero_grad();
  const float normalizer = float(std::max<int64_t>(r.trained_tokens, 1));
  ForwardOptions fo;
  fo.grad_checkpoint = o.grad_checkpoint;
  fo.compute_dtype = run.inputs.compute;
  for (std::size_t a = 0; a < micro.size(); ++a) {
    const data::Batch& b = micro[a];
    if (b.trained_tokens == 0) continue;
    ag::Tape tape;
    tape.set_release_values(true);  // only the loss (the seed) is read after backward
    AdapterStack stack;
    stack.adapters = {&run.adapter};
    stack.training = true;
    // Dropout masks are a pure function of (seed, step, micro-batch): nothing to checkpoint.
    stack.dropout_seed = data::mix64(uint64_t(o.seed) ^ data::mix64(uint64_t(step) * 1024 + a));
    const BatchLoss loss = batch_loss(tape, run.model(), stack, b, normalizer, fo);
    tape.backward(loss.loss);
    r.loss += loss.value();
  }
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
