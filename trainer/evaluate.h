// Loss and perplexity of a model (with or without adapters) over a data split, and the loading of
// a split from JSONL that training and `lora eval` share.
#pragma once
#include <cstdint>
#include <filesystem>

#include "data/batch.h"
#include "data/dataset_encode.h"
#include "trainer/distributed.h"
#include "trainer/transformer.h"

namespace lora {

// Reads and encodes one JSONL file; errors name file:line.
data::EncodedSet load_split(const std::filesystem::path& file, const data::RecordEncoder& encoder,
                            std::size_t max_line_bytes);

struct EvalResult {
  double loss = 0.0;   // mean token cross-entropy over the trained targets
  int64_t tokens = 0;  // trained targets scored
  int64_t batches = 0;
  double perplexity() const;
};

// Scores the plan's batches in order (no shuffling); max_batches < 0 means all of them.
EvalResult evaluate(const Model& model, const AdapterStack& adapters, const data::BatchPlan& plan,
                    int64_t max_batches);
// The same across the ranks of `comm`: rank r scores batches r, r+N, ...; the per-batch sums are
// exchanged and added in batch order, so the result is bit-identical to one process's.
EvalResult evaluate(const Model& model, const AdapterStack& adapters, const data::BatchPlan& plan,
                    int64_t max_batches, Communicator& comm);

}  // namespace lora
