// A read-only mmap of a whole file that the model readers hand out views into: it is unmapped when
// its owner goes, and never copied, so that no view outlives the pages it points at.
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>

namespace lora {

// A descriptor closed when its owner goes, so a reader that throws on a bad file leaks none.
struct OwnedFd {
  int fd = -1;
  explicit OwnedFd(int f) : fd(f) {}
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() {
    if (fd >= 0) ::close(fd);
  }
};

struct FileMapping {
  void* addr = nullptr;  // null for an empty file, which mmap refuses
  std::size_t size = 0;
  FileMapping(void* a, std::size_t s) : addr(a), size(s) {}
  FileMapping(const FileMapping&) = delete;
  FileMapping& operator=(const FileMapping&) = delete;
  ~FileMapping() {
    if (addr) ::munmap(addr, size);
  }
  const std::byte* bytes() const { return static_cast<const std::byte*>(addr); }
};

}  // namespace lora
