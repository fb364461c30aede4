#include "trainer/cli/parallel_flags.h"

#include <cstdio>
#include <stdexcept>

#include "trainer/cli/flag_values.h"

namespace lora::cli {

void add_parallel_flags(CLI::App& cmd, ParallelFlags& flags) {
  const char* group = "Data-parallel (under mpirun/srun)";
  cmd.add_flag("--deterministic-reduction", flags.ordered_reduction,
               "Sum the ranks' gradients in micro-batch order: bit-identical to one process when "
               "--grad-accumulation-steps is at least the number of ranks and each rank runs one "
               "thread (sends that many times the gradient bytes)")
      ->group(group);
  cmd.add_option("--collective-timeout", flags.distributed.collective_timeout_seconds,
                 "Seconds a rank waits for the others in one exchange before ending the job (a "
                 "rank has died or hangs)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str()
      ->group(group);
  flags.distributed.on_fatal = [](const std::string& message) {
    std::fprintf(stderr, "lora: error: %s\n", message.c_str());
    std::fflush(stderr);
  };
}

TrainResult train_on_ranks(const TrainOptions& options, Progress& progress, Communicator& comm,
                           bool ordered_reduction) {
  if (comm.size() == 1) return train(options, progress, {&comm, ordered_reduction});
  try {
    return train(options, progress, {&comm, ordered_reduction});
  } catch (const std::exception& e) {
    comm.abort("rank " + std::to_string(comm.rank()) + ": " + error_text(e), 1);
    throw;  // not reached: abort ends the process
  }
}

}  // namespace lora::cli
