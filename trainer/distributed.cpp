#include "trainer/distributed.h"

#include <cstdlib>
#include <stdexcept>

namespace lora {

bool Communicator::any(bool flag, const char* what) {
  if (size() == 1) return flag;
  int64_t v = flag ? 1 : 0;
  all_reduce_sum(std::span<int64_t>(&v, 1), what);
  return v != 0;
}

void SingleProcess::abort(const std::string& message, int exit_code) {
  throw std::runtime_error(message + " (exit code " + std::to_string(exit_code) + ")");
}

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  return (end != v && *end == '\0') ? int(n) : fallback;
}

}  // namespace

int launcher_world_size() {
  // Open MPI's mpirun, MPICH/Hydra and Slurm's srun (its step's task count, whatever the PMI
  // plugin) set a size; PMIx alone gives only the rank, so any rank above 0 means several.
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"})
    if (int n = env_int(name, 0); n > 0) return n;
  if (env_int("PMIX_RANK", 0) > 0) return 2;
  return 1;
}

std::unique_ptr<Communicator> join_job(const DistributedOptions& options) {
  const int n = launcher_world_size();
  if (n <= 1) return std::make_unique<SingleProcess>();
  if (!built_with_mpi())
    throw std::runtime_error(
        "started by an MPI launcher as one of " + std::to_string(n) +
        " processes, but this build has no MPI: each process would train alone and they would "
        "overwrite one another's files. Install Open MPI (libopenmpi-dev) and rebuild, or run a "
        "single process without mpirun/srun");
  return make_mpi_communicator(options);
}

}  // namespace lora
