#include "autograd/process_start.h"

#include <unistd.h>

#include <cstdlib>
#include <string_view>

#include "autograd/cpu_features.h"

namespace lora {

namespace {

constexpr std::string_view kHugePagesTunable = "glibc.malloc.hugetlb";

}  // namespace

std::vector<EnvSetting> missing_start_settings(const char* lora_cpu, const char* openblas_coretype,
                                               const char* glibc_tunables, bool cpu_has_avx512) {
  std::vector<EnvSetting> out;
  const auto cap = parse_cpu_cap(lora_cpu ? lora_cpu : "");
  if (cap && *cap < CpuLevel::Avx512 && !openblas_coretype && cpu_has_avx512)
    out.push_back({"OPENBLAS_CORETYPE", "Haswell"});
  const std::string tunables = glibc_tunables ? glibc_tunables : "";
  if (tunables.find(kHugePagesTunable) == std::string::npos)
    out.push_back({"GLIBC_TUNABLES", (tunables.empty() ? "" : tunables + ":") +
                                         std::string(kHugePagesTunable) + "=1"});
  return out;
}

void restart_with_start_settings(char** argv) {
  const auto missing =
      missing_start_settings(std::getenv("LORA_CPU"), std::getenv("OPENBLAS_CORETYPE"),
                             std::getenv("GLIBC_TUNABLES"), detect_cpu_features().avx512);
  if (missing.empty()) return;
  for (const EnvSetting& s : missing) setenv(s.name.c_str(), s.value.c_str(), 1);
  execv("/proc/self/exe", argv);
}

}  // namespace lora
