// The loss of one batch: the computation a training step and an evaluation share.
#pragma once
#include <cstdint>

#include "autograd/tape.h"
#include "data/batch.h"
#include "trainer/transformer.h"

namespace lora {

struct BatchLoss {
  ag::Var loss;            // the trained targets' summed cross-entropy / normalizer, one value
  int64_t tokens = 0;      // trained targets in the batch
  float normalizer = 1.f;  // what the sum was divided by

  double value() const { return double(loss->value.data[0]); }
  // The trained targets' summed cross-entropy (what an evaluation adds up over batches).
  double summed() const { return value() * double(normalizer); }
};

// Records the forward pass and the loss head of `batch` on `tape`. `normalizer` divides the summed
// cross-entropy: the batch's own trained tokens for its mean, or all trained tokens of an
// optimizer step when micro-batches accumulate into one gradient.
BatchLoss batch_loss(ag::Tape& tape, const Model& model, const AdapterStack& adapters,
                     const data::Batch& batch, float normalizer,
                     const ForwardOptions& forward = {});

}  // namespace lora
