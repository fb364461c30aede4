#include "trainer/io/output_preflight.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace lora {

namespace fs = std::filesystem;

namespace {

// `dir` itself when it exists, else the nearest existing path above it (which may be a file:
// the caller reports that).
fs::path nearest_existing(const fs::path& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  std::error_code ec;
  while (!fs::exists(p, ec) && p.has_parent_path() && p != p.parent_path()) p = p.parent_path();
  return p;
}

std::string mib(uint64_t bytes) { return std::to_string((bytes + (1u << 19)) >> 20) + " MiB"; }

}  // namespace

void check_folder_writable(const fs::path& dir) {
  const fs::path at = nearest_existing(dir);
  std::error_code ec;
  if (!fs::is_directory(at, ec))
    throw std::runtime_error("cannot write to " + dir.string() + ": " + at.string() +
                             " is not a folder");
  const fs::path probe = at / (".lora-write-probe-" + std::to_string(::getpid()));
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    throw std::runtime_error("cannot write to " + dir.string() + ": creating a file in " +
                             at.string() + " fails (" + std::strerror(errno) + ")");
  ::close(fd);
  ::unlink(probe.c_str());
}

uint64_t free_bytes_at(const fs::path& dir) {
  const fs::path at = nearest_existing(dir);
  struct statvfs s {};
  if (::statvfs(at.c_str(), &s) != 0)
    throw std::runtime_error("cannot read the free space of " + at.string() + ": " +
                             std::strerror(errno));
  return uint64_t(s.f_bavail) * uint64_t(s.f_frsize);
}

void check_free_space(const fs::path& dir, uint64_t needed, std::optional<uint64_t> available) {
  const uint64_t free = available ? *available : free_bytes_at(dir);
  if (free >= needed) return;
  throw std::runtime_error("not enough disk space for " + dir.string() + ": the run writes up to " +
                           mib(needed) + " (adapter, checkpoints, logs) but " + mib(free) +
                           " are free there");
}

uint64_t training_output_bytes(int64_t lora_parameters, int64_t optimizer_slots,
                               int64_t checkpoints_kept, int64_t steps) {
  const uint64_t adapter = uint64_t(lora_parameters) * sizeof(float) + (64u << 10);
  const uint64_t state = uint64_t(lora_parameters) * sizeof(float) * uint64_t(1 + optimizer_slots);
  const uint64_t logs = uint64_t(steps) * 512 + (1u << 20);  // metrics lines and the svg curve
  const uint64_t checkpoint = adapter + state + logs;
  // The final adapter is first written to a staging folder beside the live one.
  return 2 * adapter + logs + uint64_t(checkpoints_kept + 1) * checkpoint;
}

}  // namespace lora
