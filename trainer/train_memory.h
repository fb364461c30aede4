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

// One changed setting: its name (a TrainOptions key) and value ("" for a switch turned on).
struct SettingChange {
  std::string setting;
  std::string value;
};
using SettingChanges = std::vector<SettingChange>;

// A run whose estimate exceeds the memory available. `situation` gives both amounts and the parts
// of the estimate; `fixes` the alternatives that would fit, each a set of changed settings (the
// CLI spells them as flags). what() names them in the library's terms.
class MemoryFitError : public std::runtime_error {
 public:
  MemoryFitError(const std::string& situation, std::vector<SettingChanges> fixes);
  const std::string& situation() const { return situation_; }
  const std::vector<SettingChanges>& fixes() const { return fixes_; }
  // situation; "it fits with A, B, or C" (or that nothing does), each setting named by `name`.
  std::string message(const std::function<std::string(const std::string&)>& name) const;

 private:
  std::string situation_;
  std::vector<SettingChanges> fixes_;
};

// Throws MemoryFitError when the estimate exceeds `available` bytes, with the changed settings
// that would fit (grad_checkpoint, a smaller batch_size or max_seq_length, quantize 4 for LoRA;
// fewer num_layers or the sgd optimizer for full fine-tuning), or none.
void check_run_fits(const TrainOptions& options, int64_t seq, uint64_t available);

// The memory a run may take: LORA_AVAILABLE_MEMORY=BYTES when set (tests), else what the machine
// has available (available_memory_bytes); nullopt when unknown.
std::optional<uint64_t> memory_available_to_runs();

// The longest example of an encoded set, in tokens (the longest padded sequence of a batch).
int64_t longest_sequence(const data::EncodedSet& set);

// One line for people: "412 MiB (base 300, LoRA state 12, activations 100)".
std::string describe(const MemoryEstimate& e);

}  // namespace lora
