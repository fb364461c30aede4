// Buffers whose data starts on a 64-byte cache line. glibc hands out large blocks 16 bytes into a
// page, so a buffer read in 32-byte vectors from its start has every other load straddle two
// lines; the register-tile products that stream such operands (frozen_short_gemm's transposed x,
// attention's transposed keys) ran at 0.85x their speed on aligned copies (Zen 3, one thread).
#pragma once
#include <cstddef>
#include <new>
#include <vector>

namespace lora {

inline constexpr std::size_t kLineBytes = 64;

template <class T>
struct LineAligned {
  using value_type = T;
  LineAligned() = default;
  template <class U>
  explicit LineAligned(const LineAligned<U>&) {}
  T* allocate(std::size_t n) {
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{kLineBytes}));
  }
  void deallocate(T* p, std::size_t) { ::operator delete (p, std::align_val_t{kLineBytes}); }
  template <class U>
  bool operator==(const LineAligned<U>&) const {
    return true;
  }
};

using LineAlignedFloats = std::vector<float, LineAligned<float>>;

}  // namespace lora
