#include "trainer/batched_decode.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <stdexcept>

namespace lora {

namespace {

// One batched forward over `batch` (indices into sequences), then each row's sampling.
void step_batch(std::span<Decoding* const> sequences, std::span<const std::size_t> batch,
                std::vector<StepOutcome>& outcomes) {
  using clock = std::chrono::steady_clock;
  std::vector<DecodeRow> rows;
  for (std::size_t i : batch) rows.push_back(sequences[i]->decode_row());
  const Model& model = sequences[batch.front()]->model();
  const auto t0 = clock::now();
  const Tensor logits =
      forward_cached_batch(model, rows, sequences[batch.front()]->options().decode_activations);
  const double seconds = std::chrono::duration<double>(clock::now() - t0).count();
  const auto vocab = static_cast<std::size_t>(model.config.vocab_size);
  for (std::size_t r = 0; r < batch.size(); ++r)
    outcomes[batch[r]].id = sequences[batch[r]]->accept({logits.ptr() + r * vocab, vocab}, seconds);
}

// A fully fine-tuned adapter replaces whole blocks, so its rows cannot share the base's products:
// such a sequence steps alone.
bool shares_base_products(Decoding& s) {
  const AdapterStack& stack = *s.decode_row().adapters;
  return std::none_of(stack.adapters.begin(), stack.adapters.end(),
                      [](const LoraAdapter* a) { return a && a->enabled && !a->blocks.empty(); });
}

}  // namespace

std::vector<StepOutcome> step_together(std::span<Decoding* const> sequences, int64_t max_batch) {
  if (max_batch < 1)
    throw std::invalid_argument("step_together: the batch must hold at least one sequence");
  std::vector<StepOutcome> outcomes(sequences.size());
  std::vector<std::size_t> due;
  for (std::size_t i = 0; i < sequences.size(); ++i) {
    Decoding& s = *sequences[i];
    if (&s.model() != &sequences.front()->model())
      throw std::invalid_argument("step_together: the sequences run over different models");
    try {
      if (max_batch > 1 && s.decode_due() && shares_base_products(s))
        due.push_back(i);
      else
        outcomes[i].id = s.next();
    } catch (const std::exception& e) {
      outcomes[i].error = e.what();
    }
  }
  for (std::size_t begin = 0; begin < due.size(); begin += static_cast<std::size_t>(max_batch)) {
    const std::span<const std::size_t> batch =
        std::span(due).subspan(begin, std::min(due.size() - begin, std::size_t(max_batch)));
    try {
      step_batch(sequences, batch, outcomes);
    } catch (const std::exception& e) {
      for (std::size_t i : batch) outcomes[i].error = e.what();
    }
  }
  return outcomes;
}

}  // namespace lora
