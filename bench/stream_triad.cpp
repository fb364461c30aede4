// The memory bandwidth of this machine, measured on the spot: STREAM's triad a = b + s * c over
// three double arrays much larger than the caches, split over the threads as OpenMP splits
// them. Generation at batch 1 reads every weight once per token, so this figure divided by
// the bytes read per token is the fastest decode the memory allows.
//   build/bench/stream_triad [--threads N] [--mib 1536] [--reps 7]    prints one JSON object
// --mib is the three arrays together; bytes moved per pass are counted as STREAM counts them
// (two reads and one write of each element, no write-allocate traffic).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

struct Args {
  int threads = 0;  // 0: OpenMP's default
  int64_t mib = 1536;
  int reps = 7;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) throw std::runtime_error("missing value after " + flag);
    const char* v = argv[++i];
    if (flag == "--threads")
      a.threads = std::atoi(v);
    else if (flag == "--mib")
      a.mib = std::atoll(v);
    else if (flag == "--reps")
      a.reps = std::atoi(v);
    else
      throw std::runtime_error("unknown flag " + flag);
  }
  if (a.mib < 3 || a.reps < 1) throw std::runtime_error("--mib >= 3 and --reps >= 1");
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  try {
    args = parse(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stream_triad: %s\n", e.what());
    return 2;
  }
  if (args.threads > 0) omp_set_num_threads(args.threads);
  const int64_t n = args.mib * (int64_t(1) << 20) / 3 / int64_t(sizeof(double));
  // Uninitialized storage, first touched in parallel so each thread's pages are its own.
  auto a = std::make_unique_for_overwrite<double[]>(std::size_t(n));
  auto b = std::make_unique_for_overwrite<double[]>(std::size_t(n));
  auto c = std::make_unique_for_overwrite<double[]>(std::size_t(n));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 0.0;
    b[i] = 1.0;
    c[i] = 2.0;
  }
  const double s = 3.0;
  std::vector<double> gbps;
  for (int r = 0; r < args.reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) gbps.push_back(3.0 * double(n) * sizeof(double) / dt / 1e9);  // first: warm-up
  }
  if (a[n / 2] != 7.0) {
    std::fprintf(stderr, "stream_triad: wrong result %g\n", a[n / 2]);
    return 1;
  }
  std::vector<double> sorted = gbps;
  std::sort(sorted.begin(), sorted.end());
  std::printf("{\"bench\": \"stream_triad\", \"threads\": %d, \"mib\": %lld, \"reps\": %d, ",
              omp_get_max_threads(), static_cast<long long>(args.mib), args.reps);
  std::printf("\"median_gbps\": %.3f, \"best_gbps\": %.3f, \"runs_gbps\": [",
              sorted[sorted.size() / 2], sorted.back());
  for (std::size_t i = 0; i < gbps.size(); ++i) std::printf("%s%.3f", i ? ", " : "", gbps[i]);
  std::printf("]}\n");
  return 0;
}
