// The memory estimate of a training run from its settings, made before the model is loaded, and
// the refusal of a run that cannot fit, naming the settings that would.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "data/dataset_encode.h"
#include "trainer/memory_estimate.h"
#include "trainer/train_options.h"

namespace lora {

// The estimate for `options` with sequences of at most `seq` tokens (the longest example, or
// --max-seq-length when the data is not read yet). Reads the model's config and weight headers.
MemoryEstimate estimate_run_memory(const TrainOptions& options, int64_t seq);

// Throws AdvisedError when the estimate exceeds `available` bytes: the message gives both and the
// parts of the estimate; the alternatives are the changed settings that would fit (grad_checkpoint,
// a smaller batch_size or max_seq_length, quantize 4 for LoRA; fewer num_layers or the sgd
// optimizer for full fine-tuning), none when nothing does.
void check_run_fits(const TrainOptions& options, int64_t seq, uint64_t available);

// The memory a run may take: LORA_AVAILABLE_MEMORY=BYTES when set (tests), else what the machine
// has available (available_memory_bytes); nullopt when unknown.
std::optional<uint64_t> memory_available_to_runs();

// The longest example of an encoded set, in tokens (the longest padded sequence of a batch).
int64_t longest_sequence(const data::EncodedSet& set);

// One line for people: "452 MiB (base 300, LoRA state 12, activations 100, transient 25,
// process 15)".
std::string describe(const MemoryEstimate& e);

}  // namespace lora
