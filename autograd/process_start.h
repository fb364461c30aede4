// Settings that libraries read only when the process starts, before main() runs, and the restart
// that applies them. Two matter to loracpp:
//  - OpenBLAS picks its kernels when it loads, from OPENBLAS_CORETYPE: a LORA_CPU cap below
//    AVX-512 on a CPU that has it needs OPENBLAS_CORETYPE=Haswell (its AVX2 kernels).
//  - glibc asks the kernel for transparent huge pages on the memory it gets for its heap only with
//    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (glibc 2.35+; the kernel's THP mode "madvise", the
//    common default, gives none otherwise). A training step walks gigabytes of activations and
//    widened weights, and decode every weight once per token: with 4 KiB pages the TLB misses cost
//    more than the arithmetic on the virtual machines measured (bench/train_throughput: 1.3-2x). A
//    GLIBC_TUNABLES that already names glibc.malloc.hugetlb (=0 to opt out) is left alone.
#pragma once
#include <string>
#include <vector>

namespace lora {

struct EnvSetting {
  std::string name, value;
  bool operator==(const EnvSetting&) const = default;
};

// What a start with this environment lacks (empty: nothing). Arguments are the variables' values
// (nullptr: unset) and whether the CPU has AVX-512.
std::vector<EnvSetting> missing_start_settings(const char* lora_cpu, const char* openblas_coretype,
                                               const char* glibc_tunables, bool cpu_has_avx512);

// Sets what missing_start_settings finds missing and executes the program again with the same
// arguments (/proc/self/exe), so the libraries load under them. Returns when nothing is missing,
// or when exec failed (the process then runs with the libraries' own choices). Throws
// std::invalid_argument for a malformed LORA_CPU. Call first thing in main, before threads start.
void restart_with_start_settings(char** argv);

}  // namespace lora
