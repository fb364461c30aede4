// The processes of one training job and the few collectives data-parallel training needs. A run
// on one process uses SingleProcess (every collective is the identity); a job started by an MPI
// launcher (mpirun, srun) uses the MPI communicator when this build has MPI.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

namespace lora {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // Element-wise sums over all ranks, in place; every rank ends with the same values.
  virtual void all_reduce_sum(std::span<float> values, const char* what) = 0;
  virtual void all_reduce_sum(std::span<double> values, const char* what) = 0;
  virtual void all_reduce_sum(std::span<int64_t> values, const char* what) = 0;
  virtual void barrier(const char* what) = 0;
  // Ends every rank of the job (after `message` has been reported); never returns.
  [[noreturn]] virtual void abort(const std::string& message, int exit_code) = 0;
  // "1 process" or "MPI, 4 ranks (Open MPI v4.1.4)".
  virtual std::string describe() const = 0;

  bool is_root() const { return rank() == 0; }
  // True on every rank when `flag` is true on any rank.
  bool any(bool flag, const char* what);
};

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  void all_reduce_sum(std::span<float>, const char*) override {}
  void all_reduce_sum(std::span<double>, const char*) override {}
  void all_reduce_sum(std::span<int64_t>, const char*) override {}
  void barrier(const char*) override {}
  [[noreturn]] void abort(const std::string& message, int exit_code) override;
  std::string describe() const override { return "1 process"; }
};

struct DistributedOptions {
  // A collective that has not completed after this many seconds means a rank is gone (or stuck):
  // the job is aborted. It must exceed the longest wait of a fast rank for a slow one.
  double collective_timeout_seconds = 600.0;
  // Called with a message for a person before the job is aborted (the library never prints).
  std::function<void(const std::string&)> on_fatal;
};

// Whether this build has the MPI path.
bool built_with_mpi();
// The number of processes an MPI launcher started for this job (Open MPI, MPICH/Hydra, PMI,
// PMIx, Slurm's srun), or 1 when none did.
int launcher_world_size();
// The communicator for this process: MPI when a launcher started more than one process (MPI is
// initialized here and finalized when the object dies), else SingleProcess. Throws when a
// launcher started several processes but this build has no MPI.
std::unique_ptr<Communicator> join_job(const DistributedOptions& options);
// The MPI communicator (only in a build with MPI; throws otherwise).
std::unique_ptr<Communicator> make_mpi_communicator(const DistributedOptions& options);

}  // namespace lora
