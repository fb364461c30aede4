// The MPI communicator. Collectives are non-blocking calls polled against a deadline, so a rank
// that died (or hangs) ends the job with a message instead of leaving the others waiting forever;
// MPI errors are returned (MPI_ERRORS_RETURN), reported, and end the job with MPI_Abort.
#include <algorithm>
#include <chrono>
#include <climits>
#include <stdexcept>
#include <thread>

#include "trainer/distributed.h"

#if LORA_WITH_MPI
#include <mpi.h>
#endif

namespace lora {

#if LORA_WITH_MPI

bool built_with_mpi() { return true; }

namespace {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(const DistributedOptions& options) : options_(options) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (initialized) throw std::logic_error("MPI is already initialized in this process");
    int provided = 0;
    // Only the main thread calls MPI; OpenMP threads never do.
    if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
      throw std::runtime_error("MPI_Init_thread failed");
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }
  ~MpiCommunicator() override {
    MPI_Comm_free(&comm_);
    MPI_Finalize();
  }
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  void all_reduce_sum(std::span<float> v, const char* what) override {
    reduce(v.data(), v.size(), MPI_FLOAT, what);
  }
  void all_reduce_sum(std::span<double> v, const char* what) override {
    reduce(v.data(), v.size(), MPI_DOUBLE, what);
  }
  void all_reduce_sum(std::span<int64_t> v, const char* what) override {
    reduce(v.data(), v.size(), MPI_INT64_T, what);
  }
  void barrier(const char* what) override {
    MPI_Request req;
    check(MPI_Ibarrier(comm_, &req), what);
    wait(req, what);
  }
  [[noreturn]] void abort(const std::string& message, int exit_code) override {
    if (options_.on_fatal) options_.on_fatal(message);
    MPI_Abort(comm_, exit_code);
    std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest if it did
  }
  std::string describe() const override {
    char version[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(version, &len);
    std::string lib(version, std::size_t(len));
    lib = lib.substr(0, lib.find_first_of(",\n"));
    return "MPI, " + std::to_string(size_) + " ranks (" + lib + ")";
  }

 private:
  void reduce(void* data, std::size_t count, MPI_Datatype type, const char* what) {
    int type_size = 0;
    MPI_Type_size(type, &type_size);
    auto* bytes = static_cast<char*>(data);
    // MPI counts are ints: long spans go in chunks.
    for (std::size_t done = 0; done < count;) {
      const std::size_t n = std::min<std::size_t>(count - done, std::size_t(INT_MAX / 2));
      MPI_Request req;
      check(MPI_Iallreduce(MPI_IN_PLACE, bytes + done * std::size_t(type_size), int(n), type,
                           MPI_SUM, comm_, &req),
            what);
      wait(req, what);
      done += n;
    }
  }

  // Polls with a growing sleep (at most 2 ms): a waiting rank leaves its core to the others.
  void wait(MPI_Request& req, const char* what) {
    using clock = std::chrono::steady_clock;
    const auto deadline =
        clock::now() + std::chrono::duration_cast<clock::duration>(
                           std::chrono::duration<double>(options_.collective_timeout_seconds));
    auto pause = std::chrono::microseconds(20);
    for (;;) {
      int done = 0;
      check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), what);
      if (done) return;
      if (clock::now() > deadline)
        abort("rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": the " + what +
                  " found no answer from the other ranks for " +
                  std::to_string(int64_t(options_.collective_timeout_seconds)) +
                  " s: a rank has died or hangs; ending the job (the last checkpoint is intact)",
              1);
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(2000));
    }
  }

  void check(int code, const char* what) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, text, &len);
    abort("rank " + std::to_string(rank_) + " of " + std::to_string(size_) + ": the " + what +
              " failed (" + std::string(text, std::size_t(len)) +
              "): a rank has probably died; ending the job (the last checkpoint is intact)",
          1);
  }

  DistributedOptions options_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(const DistributedOptions& options) {
  return std::make_unique<MpiCommunicator>(options);
}

#else

bool built_with_mpi() { return false; }

std::unique_ptr<Communicator> make_mpi_communicator(const DistributedOptions&) {
  throw std::runtime_error("this build has no MPI (install libopenmpi-dev and rebuild)");
}

#endif

}  // namespace lora
