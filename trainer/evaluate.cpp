#include "trainer/evaluate.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "trainer/batch_loss.h"

namespace lora {

data::EncodedSet load_split(const std::filesystem::path& file, const data::RecordEncoder& encoder,
                            std::size_t max_line_bytes) {
  data::ReadOptions read;
  read.max_line_bytes = max_line_bytes;
  return data::encode_records(encoder, data::read_jsonl(file, read), file.string());
}

std::shared_ptr<const data::StreamedExamples> stream_split(
    const std::filesystem::path& file, std::shared_ptr<const data::RecordEncoder> encoder,
    std::size_t max_line_bytes) {
  data::ReadOptions read;
  read.max_line_bytes = max_line_bytes;
  return std::make_shared<const data::StreamedExamples>(file, std::move(encoder), read);
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
    const BatchLoss loss = batch_loss(tape, model, adapters, b, float(b.trained_tokens));
    sums[std::size_t(2 * g)] = loss.summed();
    sums[std::size_t(2 * g + 1)] = double(loss.tokens);
  }
  comm.all_reduce_sum(std::span<double>(sums), "evaluation all-reduce");
  // In batch order, as one process adds them (each entry came from one rank: exact sums).
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
