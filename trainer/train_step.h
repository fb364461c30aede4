// One optimizer step of a run: the step's micro-batches forward and backward into one gradient,
// then the update.
#pragma once
#include <cstdint>
#include <vector>

#include "trainer/train_run.h"

namespace lora {

struct StepResult {
  double loss = 0.0;                 // mean cross-entropy over the step's trained tokens
  int64_t trained_tokens = 0;        // loss-bearing targets of all micro-batches
  int64_t tokens = 0;                // real input tokens (for tokens/s)
  float grad_norm = 0.0f;            // global L2 norm of the gradients before clipping
  std::vector<double> micro_losses;  // per micro-batch (this process's part until reduced)
};

// Forward and backward over the next --grad-accumulation-steps micro-batches (advancing
// run.state.cursor); leaves the step's gradient, normalized by all its trained tokens, in the
// adapter's parameters. Returns the loss and token counts (grad_norm unset). In a data-parallel
// run, only this rank's shares of the micro-batches (data_parallel.h) until train_step reduces.
StepResult accumulate_gradients(TrainRun& run, int64_t step);

// Optimizer step `step` (1-based) at learning rate `lr`: accumulate_gradients, then the one place
// where the step's gradients are complete (reduce_gradients), a non-finite loss stop, clipping and
// the update. Advances run.state: the step, the trained tokens and the report window's loss sums.
StepResult train_step(TrainRun& run, int64_t step, float lr);

}  // namespace lora
