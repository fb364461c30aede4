#include "trainer/evaluate.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace lora {

data::EncodedSet load_split(const std::filesystem::path& file, const data::RecordEncoder& encoder,
                            std::size_t max_line_bytes) {
  data::ReadOptions read;
  read.max_line_bytes = max_line_bytes;
  return data::encode_records(encoder, data::read_jsonl(file, read), file.string());
}

double EvalResult::perplexity() const { return std::exp(loss); }

EvalResult evaluate(const Model& model, const AdapterStack& adapters, const data::BatchPlan& plan,
                    int64_t max_batches) {
  SingleProcess one;
  return evaluate(model, adapters, plan, max_batches, one);
}

EvalResult evaluate(const Model& model, const AdapterStack& adapters, const data::BatchPlan& plan,
                    int64_t max_batches, Communicator& comm) {
  const int64_t n =
      max_batches < 0 ? plan.batches_per_epoch() : std::min(max_batches, plan.batches_per_epoch());
  // Per batch: the loss summed over its trained targets, and their count (this rank's batches).
  std::vector<double> sums(std::size_t(2 * n), 0.0);
  for (int64_t g = comm.rank(); g < n; g += comm.size()) {
    const data::Batch b = plan.group(g);
    if (b.trained_tokens == 0) continue;
    ag::Tape tape(/*record=*/false);
    ag::Var hidden = forward_hidden(tape, model, adapters, b.inputs, b.batch, b.seq, b.key_valid);
    ag::Var loss = ag::cross_entropy_head(tape, hidden, model.head(), b.targets, b.weights,
                                          float(b.trained_tokens));
    sums[std::size_t(2 * g)] = double(loss->value.data[0]) * double(b.trained_tokens);
    sums[std::size_t(2 * g + 1)] = double(b.trained_tokens);
  }
  comm.all_reduce_sum(std::span<double>(sums), "evaluation all-reduce");
  EvalResult r;
  double total = 0.0;
  for (int64_t g = 0; g < n; ++g) {
    if (sums[std::size_t(2 * g + 1)] == 0.0) continue;
    total += sums[std::size_t(2 * g)];
    r.tokens += int64_t(sums[std::size_t(2 * g + 1)]);
    ++r.batches;
  }
  r.loss = r.tokens > 0 ? total / double(r.tokens) : NAN;
  return r;
}

}  // namespace lora
