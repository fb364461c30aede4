// Steps several generations together: the one-token decode steps of sequences over the same base
// share one batched forward (forward_cached_batch), so the base's weights are read once per step
// for all of them instead of once per sequence. Each keeps its own cache, adapters, strengths and
// sampler, and gets the ids it would get stepped alone.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "trainer/decoding.h"

namespace lora {

// What one step gave a sequence: its new id, or nullopt once it has finished (its stop_reason()
// says why), or an error (the step failed for it; it should not be stepped again).
struct StepOutcome {
  std::optional<int32_t> id;
  std::string error;
};

// One token for each sequence (all over the same model). Sequences whose prompt has not run yet
// run it alone (prefill); the others go through batched steps of at most `max_batch` rows
// (1: each alone, as Decoding::next()).
std::vector<StepOutcome> step_together(std::span<Decoding* const> sequences, int64_t max_batch);

}  // namespace lora
