// What this CPU (and its OS) can run, and how much of it the process may use. Every kernel with
// copies for several instruction sets picks its copy from active_cpu_features(), once; the same
// cap reaches oneDNN (its max ISA) and OpenBLAS (OPENBLAS_CORETYPE, see process_start.h).
//
// The cap comes from the environment variable LORA_CPU: avx2, avx512, avx512_bf16 or amx (each
// allows itself and everything before it); unset or empty, everything detected is used.
#pragma once
#include <optional>
#include <string>
#include <string_view>

namespace lora {

// The instruction-set levels the kernels are built for, in increasing order.
enum class CpuLevel { Avx2, Avx512, Avx512Bf16, Amx };

struct CpuFeatures {
  bool avx2 = false;    // AVX2 with FMA and F16C: the baseline the whole build assumes
  bool avx512 = false;  // AVX-512 F, BW, VL and DQ with the OS saving the zmm state
  // AVX512-VNNI (int8 dot products), with avx512. Not a level of its own: it changes no result,
  // only how the int8 matrix-vector kernels add their products, so LORA_CPU=avx512 keeps it.
  bool avx512_vnni = false;
  bool avx512_bf16 = false;  // AVX512-BF16 (bf16 dot products)
  bool amx = false;          // AMX tiles with bf16, the OS saving and permitting tile data

  // The highest level every flag up to it allows (Avx2 when nothing is set either).
  CpuLevel level() const;
  // Whether bf16 products run on bf16 units (AVX512-BF16 or AMX) rather than emulated.
  bool bf16_units() const { return avx512_bf16 || amx; }
  // "avx2 avx512 avx512_vnni avx512_bf16 amx": the set flags, the levels by their LORA_CPU names.
  std::string names() const;
  bool operator==(const CpuFeatures&) const = default;
};

// What CPUID and the OS report (XCR0 for the register state; for AMX also the Linux
// arch_prctl(ARCH_REQ_XCOMP_PERM) request for tile data, which oneDNN makes as well).
CpuFeatures detect_cpu_features();

// The LORA_CPU value: nullopt for "" (no cap); std::invalid_argument naming the allowed values
// for anything else.
std::optional<CpuLevel> parse_cpu_cap(std::string_view value);
std::string_view cpu_level_name(CpuLevel level);
// `features` without everything above `cap`.
CpuFeatures capped(CpuFeatures features, std::optional<CpuLevel> cap);

// The cap from LORA_CPU (std::invalid_argument when it is malformed).
std::optional<CpuLevel> cpu_cap_from_environment();
// detect_cpu_features() capped by LORA_CPU, resolved once per process. The first call also caps
// oneDNN's dispatch to the same level (before any oneDNN primitive exists).
const CpuFeatures& active_cpu_features();

// The kernel family OpenBLAS loaded with ("Haswell", "SkylakeX", ...; "unknown" when it says none).
std::string blas_core_name();
// Why OpenBLAS runs below the instruction set this process uses, or "" when it does not: its AVX2
// kernels where AVX-512 is in use (an OPENBLAS_CORETYPE from the environment, or an OpenBLAS that
// does not know the CPU), which halves the f32 products.
std::string blas_kernels_below_cpu();

// What the process detected and uses, for --version and the benchmarks' reports: the feature
// names (CpuFeatures::names), the cap ("none" when LORA_CPU is unset), OpenBLAS's kernel family
// ("Haswell", "SkylakeX", ...), oneDNN's effective ISA, and the glibc tunables the process runs
// under ("(none)" when GLIBC_TUNABLES is unset; huge pages, process_start.h).
struct CpuReport {
  std::string detected, in_use, cap, blas_core, onednn_isa, glibc_tunables;
  // {"detected": ..., "in_use": ..., "cap": ..., "blas_core": ..., "onednn_isa": ...,
  //  "glibc_tunables": ...}
  std::string json() const;
};
CpuReport cpu_report();

}  // namespace lora
