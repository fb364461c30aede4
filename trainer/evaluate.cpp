#include "trainer/evaluate.h"

#include <algorithm>
#include <cmath>

#include "trainer/batch_loss.h"

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
  EvalResult r;
  double total = 0.0;
  const int64_t n =
      max_batches < 0 ? plan.batches_per_epoch() : std::min(max_batches, plan.batches_per_epoch());
  for (int64_t g = 0; g < n; ++g) {
    const data::Batch b = plan.group(g);
    if (b.trained_tokens == 0) continue;
    ag::Tape tape(/*record=*/false);
    const BatchLoss loss = batch_loss(tape, model, adapters, b, float(b.trained_tokens));
    total += loss.summed();
    r.tokens += loss.tokens;
    ++r.batches;
  }
  r.loss = r.tokens > 0 ? total / double(r.tokens) : NAN;
  return r;
}

}  // namespace lora
