// The training loop: data, model and adapter set up from TrainOptions, optimizer steps with
// gradient accumulation, reports, validation, checkpoints, exact resume, and a clean stop on
// SIGINT/SIGTERM.
#pragma once
#include <cstdint>
#include <filesystem>
#include <optional>

#include "trainer/data_parallel.h"
#include "trainer/progress.h"
#include "trainer/train_options.h"

namespace lora {

struct TrainResult {
  int64_t steps = 0;                 // optimizer steps done (in total, resumed ones included)
  bool interrupted = false;          // stopped by a signal after saving a checkpoint
  std::filesystem::path checkpoint;  // the last checkpoint written (empty if none)
  std::optional<double> final_val_loss;
  std::optional<double> test_loss;
};

// Runs (or, with options.resume set, continues) a training run. `resume_config` is the resumed
// checkpoint's config when the caller already read it (to fill unset flags); the checkpoint is
// read again here. Errors are std::runtime_error with a message for the user; nothing is written
// to the adapter folder before the data and model have loaded and checked out.
//
// Fault injection for tests: LORA_FAULT_SIGNAL_AT_STEP="STEP:SIGNAL" raises SIGNAL (e.g. 2 for
// SIGINT, 9 for SIGKILL) right after optimizer step STEP.
//
// Data-parallel: every rank of `parallel.comm` calls this with the same options; each computes
// its share of every global batch (data_parallel.h) and rank 0 alone writes files.
// LORA_FAULT_RANK=R limits the fault injection to rank R.
TrainResult train(const TrainOptions& options, Progress& progress,
                  const ParallelOptions& parallel = {});

}  // namespace lora
