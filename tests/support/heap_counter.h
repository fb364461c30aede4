// Counts the bytes a test program holds through operator new: include this header in exactly one
// source file of the program (it replaces the global operator new and delete). Blocks from malloc
// itself, and the allocator's own caches, are not counted, so the count does not move with
// allocator state (per-thread caches, arenas): only with what the program keeps.
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace lora::test::heap_counter {

struct Counts {
  std::atomic<int64_t> live{0}, peak{0};
};
// Function-local: constructed before the first allocation whatever the order of initialization.
inline Counts& counts() {
  static Counts c;
  return c;
}
inline int64_t live_bytes() { return counts().live.load(); }
inline int64_t peak_bytes() { return counts().peak.load(); }
inline void reset_peak() { counts().peak = counts().live.load(); }

constexpr std::size_t kHeader = 16;  // keeps new's 16-byte alignment

inline void* counted_new(std::size_t n) {
  void* p = std::malloc(n + kHeader);
  if (p == nullptr) throw std::bad_alloc();
  *static_cast<std::size_t*>(p) = n;
  Counts& c = counts();
  const int64_t live = c.live.fetch_add(int64_t(n)) + int64_t(n);
  int64_t peak = c.peak.load();
  while (live > peak && !c.peak.compare_exchange_weak(peak, live)) {
  }
  return static_cast<char*>(p) + kHeader;
}

inline void counted_delete(void* p) noexcept {
  if (p == nullptr) return;
  char* block = static_cast<char*>(p) - kHeader;
  counts().live.fetch_sub(int64_t(*reinterpret_cast<std::size_t*>(block)));
  std::free(block);
}

}  // namespace lora::test::heap_counter

void* operator new(std::size_t n) { return lora::test::heap_counter::counted_new(n); }
void* operator new[](std::size_t n) { return lora::test::heap_counter::counted_new(n); }
void operator delete(void* p) noexcept { lora::test::heap_counter::counted_delete(p); }
void operator delete[](void* p) noexcept { lora::test::heap_counter::counted_delete(p); }
void operator delete(void* p, std::size_t) noexcept { lora::test::heap_counter::counted_delete(p); }
void operator delete[](void* p, std::size_t) noexcept {
  lora::test::heap_counter::counted_delete(p);
}
// The nothrow forms too: a sanitizer runtime serves them itself, and their blocks would then reach
// counted_delete without its header.
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return lora::test::heap_counter::counted_new(n);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t& tag) noexcept {
  return ::operator new(n, tag);
}
void operator delete(void* p, const std::nothrow_t&) noexcept {
  lora::test::heap_counter::counted_delete(p);
}
void operator delete[](void* p, const std::nothrow_t&) noexcept {
  lora::test::heap_counter::counted_delete(p);
}
