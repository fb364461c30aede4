// A read-only mmap of a whole file that the model readers hand out views into: it is unmapped when
// its owner goes, and never copied, so that no view outlives the pages it points at.
#pragma once
#include <sys/mman.h>

#include <cstddef>

namespace lora {

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
