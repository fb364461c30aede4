// Loss and perplexity of a model (with or without adapters) over a data split, and the loading of
// a split from JSONL that training and `lora eval` share.
#pragma once
#include <cstdint>
#include <filesystem>
#include <memory>

#include "data/batch.h"
#include "data/dataset_encode.h"
#include "data/jsonl_stream.h"
#include "trainer/distributed.h"
#include "trainer/transformer.h"

namespace lora {

// Reads and encodes one JSONL file; errors name file:line.
data::EncodedSet load_split(const std::filesystem::path& file, const data::RecordEncoder& encoder,
                            std::size_t max_line_bytes);
// The same checks in one pass that keeps an index, not the records: batches read their records
// again from the file (data/jsonl_stream.h). What training and `lora eval` use.
std::shared_ptr<const data::StreamedExamples> stream_split(
    const std::filesystem::path& file, std::shared_ptr<const data::RecordEncoder> encoder,
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
