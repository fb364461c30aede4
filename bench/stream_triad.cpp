// The memory bandwidth of this machine, measured on the spot: a STREAM-style triad
// a[i] = b[i] + s * c[i] over arrays far larger than any cache, with the OpenMP threads the other
// benchmarks use, and a pass that only reads (b summed). Generation at batch 1 reads every weight
// once per token and writes next to nothing, so the read pass is its ceiling (bandwidth / bytes
// read per token); the triad is the figure machines are usually quoted by.
//
//   build/bench/stream_triad [--mib 256] [--reps 10] [--json FILE]
// Bytes count as STREAM counts them: two arrays read and one written per triad pass (24 bytes per
// element of doubles), write-allocate traffic not included; one array per read pass. Prints one
// JSON object with the median and best GB/s (1e9 bytes per second) of the timed passes of each
// (the two alternate; the first of each only warms).
// The arrays are in transparent huge pages where the kernel allows them (GLIBC_TUNABLES, as for
// every loracpp program).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/process_start.h"
#include "bench/bench_args.h"

namespace {

struct Args {
  int64_t mib = 256;  // per array
  int reps = 10;
  std::string json_path;
};

Args parse(int argc, char** argv) {
  Args a;
  lora::bench::parse_flags(argc, argv, [&](const std::string& k, auto& value) {
    if (k == "--mib")
      a.mib = std::stoll(value());
    else if (k == "--reps")
      a.reps = std::stoi(value());
    else if (k == "--json")
      a.json_path = value();
    else
      return false;
    return true;
  });
  if (a.mib < 1 || a.reps < 1) throw std::invalid_argument("--mib and --reps must be positive");
  return a;
}

// Arrays left uninitialised by the allocator, so that the first touch happens in the parallel
// loop below and each page lands on the NUMA node of the thread that uses it.
struct Array {
  explicit Array(std::size_t n) : data(std::make_unique_for_overwrite<double[]>(n)) {}
  std::unique_ptr<double[]> data;
  double* get() const { return data.get(); }
};

double triad_seconds(double* a, const double* b, const double* c, int64_t n, double s) {
  const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The sum lets the caller check that the loop ran.
double read_seconds(const double* b, int64_t n, double& sum) {
  const auto t0 = std::chrono::steady_clock::now();
  double s = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += b[i];
  sum = s;
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

}  // namespace

int main(int argc, char** argv) try {
  // In huge pages as loracpp's own weights are (process_start.h): with 4 KiB pages the triad
  // measures TLB misses on a virtual machine, not the memory.
  lora::restart_with_start_settings(argv);
  const Args args = parse(argc, argv);
  const int64_t n = args.mib * (int64_t(1) << 20) / int64_t(sizeof(double));
  const auto count = static_cast<std::size_t>(n);
  const Array a(count), b(count), c(count);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    a.get()[i] = 0.0;
    b.get()[i] = 1.0;
    c.get()[i] = 2.0;
  }
  const double bytes = 3.0 * double(n) * sizeof(double), read_bytes = double(n) * sizeof(double);
  std::vector<double> gbps, read_gbps;
  for (int r = 0; r < args.reps + 1; ++r) {
    const double dt = triad_seconds(a.get(), b.get(), c.get(), n, 3.0);
    double sum = 0.0;
    const double read_dt = read_seconds(b.get(), n, sum);
    // Every b is 1: a read pass the compiler shortened shows here.
    if (sum != double(n)) throw std::logic_error("read pass sum is wrong: the loop did not run");
    if (r == 0) continue;
    gbps.push_back(bytes / dt / 1e9);
    read_gbps.push_back(read_bytes / read_dt / 1e9);
  }
  // Every element is 1 + 3 * 2: a wrong loop (or one the compiler dropped) shows here.
  if (a.get()[0] != 7.0 || a.get()[n - 1] != 7.0)
    throw std::logic_error("triad result is wrong: the loop did not run as written");
  nlohmann::json out;
  out["bench"] = "stream_triad";
  out["threads"] = omp_get_max_threads();
  out["array_mib"] = args.mib;
  out["bytes_per_pass"] = bytes;
  out["reps"] = args.reps;
  out["gbps"] = gbps;
  out["median_gbps"] = median(gbps);
  out["best_gbps"] = *std::max_element(gbps.begin(), gbps.end());
  out["read_gbps"] = read_gbps;
  out["read_median_gbps"] = median(read_gbps);
  out["read_best_gbps"] = *std::max_element(read_gbps.begin(), read_gbps.end());
  std::fprintf(stderr,
               "stream triad, %d threads, 3 x %lld MiB: median %.1f GB/s, best %.1f GB/s; "
               "read only: median %.1f GB/s, best %.1f GB/s\n",
               omp_get_max_threads(), static_cast<long long>(args.mib), double(out["median_gbps"]),
               double(out["best_gbps"]), double(out["read_median_gbps"]),
               double(out["read_best_gbps"]));
  const std::string text = out.dump();
  std::cout << text << std::endl;
  if (!args.json_path.empty()) std::ofstream(args.json_path) << text << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "stream_triad: %s\n", e.what());
  return 1;
}
