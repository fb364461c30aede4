#include "trainer/batch_loss.h"

namespace lora {

BatchLoss batch_loss(ag::Tape& tape, const Model& model, const AdapterStack& adapters,
                     const data::Batch& batch, float normalizer, const ForwardOptions& forward) {
  const data::Batch& b = batch;
  ag::Var hidden =
      forward_hidden(tape, model, adapters, b.inputs, b.batch, b.seq, b.key_valid, forward);
  ag::Var loss = ag::cross_entropy_head(tape, hidden, model.head(), b.targets, b.weights,
                                        normalizer, model.config.final_logit_softcap);
  return {loss, b.trained_tokens, normalizer};
}

}  // namespace lora
