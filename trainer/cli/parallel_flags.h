// `lora train`'s data-parallel flags, and the run of train() on the ranks of an MPI job: a rank
// that fails ends the whole job with its message (the others would wait for it forever).
#pragma once
#include <CLI/CLI.hpp>

#include "trainer/distributed.h"
#include "trainer/trainer.h"

namespace lora::cli {

struct ParallelFlags {
  DistributedOptions distributed;
  bool ordered_reduction = false;
};

void add_parallel_flags(CLI::App& cmd, ParallelFlags& flags);

TrainResult train_on_ranks(const TrainOptions& options, Progress& progress, Communicator& comm,
                           bool ordered_reduction);

}  // namespace lora::cli
