#include "autograd/cpu_features.h"

#include <cpuid.h>
#include <oneapi/dnnl/dnnl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <utility>

extern "C" char* openblas_get_corename(void);

namespace lora {
namespace {

struct Cpuid {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};
Cpuid cpuid(unsigned leaf, unsigned subleaf) {
  Cpuid r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return {};
  return r;
}
bool bit(unsigned word, int n) { return (word >> n) & 1u; }

// XCR0: which register state the OS saves on a context switch (zero without OSXSAVE).
uint64_t os_saved_state() {
  if (!bit(cpuid(1, 0).ecx, 27)) return 0;
  uint32_t lo = 0, hi = 0;
  asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return uint64_t(hi) << 32 | lo;
}

// Linux hands out the 8 KiB AMX tile state only to processes that ask (since 5.16); a kernel
// without the request has no AMX support at all.
bool os_permits_amx_tiles() {
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

constexpr std::array<std::string_view, 4> kLevelNames = {"avx2", "avx512", "avx512_bf16", "amx"};

dnnl_cpu_isa_t onednn_isa_for(CpuLevel level) {
  switch (level) {
    case CpuLevel::Avx2:
      return dnnl_cpu_isa_avx2;
    case CpuLevel::Avx512:
      return dnnl_cpu_isa_avx512_core;
    case CpuLevel::Avx512Bf16:
      return dnnl_cpu_isa_avx512_core_bf16;
    case CpuLevel::Amx:
      break;
  }
  return dnnl_cpu_isa_avx512_core_amx;
}

std::string onednn_isa_name(dnnl_cpu_isa_t isa) {
  switch (isa) {
    case dnnl_cpu_isa_avx2:
      return "avx2";
    case dnnl_cpu_isa_avx2_vnni:
      return "avx2_vnni";
    case dnnl_cpu_isa_avx512_core:
      return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
      return "avx512_core_amx";
    default:
      return "other (" + std::to_string(int(isa)) + ")";
  }
}

CpuFeatures resolve_active() {
  const auto cap = cpu_cap_from_environment();
  const CpuFeatures active = capped(detect_cpu_features(), cap);
  // Only the first call before any primitive takes effect; later ones (another library in the
  // process got there first) fail, and cpu_report_json() then shows what oneDNN really uses.
  if (cap) dnnl_set_max_cpu_isa(onednn_isa_for(active.level()));
  return active;
}

}  // namespace

CpuLevel CpuFeatures::level() const {
  if (!avx512) return CpuLevel::Avx2;
  if (!avx512_bf16) return CpuLevel::Avx512;
  return amx ? CpuLevel::Amx : CpuLevel::Avx512Bf16;
}

std::string CpuFeatures::names() const {
  const std::pair<bool, std::string_view> flags[] = {{avx2, kLevelNames[0]},
                                                     {avx512, kLevelNames[1]},
                                                     {avx512_vnni, "avx512_vnni"},
                                                     {avx512_bf16, kLevelNames[2]},
                                                     {amx, kLevelNames[3]}};
  std::string out;
  for (const auto& [set, name] : flags)
    if (set) out += (out.empty() ? "" : " ") + std::string(name);
  return out;
}

CpuFeatures detect_cpu_features() {
  const Cpuid l1 = cpuid(1, 0), l7 = cpuid(7, 0), l7s1 = cpuid(7, 1);
  const uint64_t xcr0 = os_saved_state();
  const bool ymm = (xcr0 & 0x6) == 0x6, zmm = ymm && (xcr0 & 0xE0) == 0xE0;
  const bool tiles = (xcr0 & 0x60000) == 0x60000;
  CpuFeatures f;
  f.avx2 = ymm && bit(l7.ebx, 5) && bit(l1.ecx, 12) && bit(l1.ecx, 29);
  f.avx512 =
      f.avx2 && zmm && bit(l7.ebx, 16) && bit(l7.ebx, 17) && bit(l7.ebx, 30) && bit(l7.ebx, 31);
  f.avx512_vnni = f.avx512 && bit(l7.ecx, 11);
  f.avx512_bf16 = f.avx512 && bit(l7s1.eax, 5);
  f.amx = f.avx512_bf16 && tiles && bit(l7.edx, 24) && bit(l7.edx, 22) && os_permits_amx_tiles();
  return f;
}

std::optional<CpuLevel> parse_cpu_cap(std::string_view value) {
  if (value.empty()) return std::nullopt;
  for (std::size_t i = 0; i < kLevelNames.size(); ++i)
    if (value == kLevelNames[i]) return CpuLevel(i);
  throw std::invalid_argument(
      "LORA_CPU must be one of avx2, avx512, avx512_bf16, amx (or unset), got \"" +
      std::string(value) + "\"");
}

std::string_view cpu_level_name(CpuLevel level) { return kLevelNames[std::size_t(level)]; }

CpuFeatures capped(CpuFeatures f, std::optional<CpuLevel> cap) {
  if (!cap) return f;
  if (*cap < CpuLevel::Amx) f.amx = false;
  if (*cap < CpuLevel::Avx512Bf16) f.avx512_bf16 = false;
  if (*cap < CpuLevel::Avx512) f.avx512 = f.avx512_vnni = false;
  return f;
}

std::optional<CpuLevel> cpu_cap_from_environment() {
  const char* env = std::getenv("LORA_CPU");
  return parse_cpu_cap(env ? env : "");
}

const CpuFeatures& active_cpu_features() {
  static const CpuFeatures active = resolve_active();
  return active;
}

std::string blas_core_name() {
  const char* core = openblas_get_corename();
  return core ? core : "unknown";
}

std::string blas_kernels_below_cpu() {
  if (!active_cpu_features().avx512) return "";
  const std::string core = blas_core_name();
  for (std::string_view avx512_core : {"SkylakeX", "Cooperlake", "SapphireRapids"})
    if (core == avx512_core) return "";
  const char* coretype = std::getenv("OPENBLAS_CORETYPE");
  return "OpenBLAS runs its " + core + " kernels on a CPU whose AVX-512 is in use" +
         (coretype ? " (OPENBLAS_CORETYPE=" + std::string(coretype) +
                         " in the environment; unset it to let OpenBLAS choose)"
                   : " (OPENBLAS_CORETYPE=SkylakeX selects its AVX-512 kernels)") +
         ": f32 products run at about half speed";
}

CpuReport cpu_report() {
  const CpuFeatures& active = active_cpu_features();
  const auto cap = cpu_cap_from_environment();
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  return {detect_cpu_features().names(),
          active.names(),
          std::string(cap ? cpu_level_name(*cap) : "none"),
          blas_core_name(),
          onednn_isa_name(dnnl_get_effective_cpu_isa()),
          tunables ? tunables : "(none)"};
}

std::string CpuReport::json() const {
  auto field = [](std::string_view key, const std::string& value) {
    return "\"" + std::string(key) + "\":\"" + value + "\"";
  };
  return "{" + field("detected", detected) + "," + field("in_use", in_use) + "," +
         field("cap", cap) + "," + field("blas_core", blas_core) + "," +
         field("onednn_isa", onednn_isa) + "," + field("glibc_tunables", glibc_tunables) + "}";
}

}  // namespace lora
