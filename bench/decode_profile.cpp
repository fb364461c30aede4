// Where a decode step's time goes: one token through the KV-cached forward, against the
// matrix-vector products alone (every projection of every layer and the head, as the step runs
// them), with the bytes those read and the rate that makes; and the prompt's forward against its
// products alone. Steps run on a SpinTeam, as lora generate runs them, alternating with steps
// whose loops open OpenMP regions (openmp_step_ms), so the two are compared in one run.
//   build/bench/decode_profile MODEL [--threads N] [--prompt 32] [--tokens 32] [--kv-cache f16]
//                              [--decode-activations int8]
#include <omp.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "autograd/frozen_gemv.h"
#include "autograd/heap.h"
#include "autograd/parallel.h"
#include "autograd/process_start.h"
#include "trainer/gguf_model.h"
#include "trainer/transformer.h"

extern "C" void openblas_set_num_threads(int);

namespace {

using namespace lora;
using clock_type = std::chrono::steady_clock;

double cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// A prompt's products: each projection of each layer on n rows, then the head on one row (as
// the prefill runs them); CPU seconds, which a loaded machine disturbs less than wall time.
double prompt_products_seconds(const Model& m, int64_t n) {
  const ModelConfig& c = m.config;
  const int64_t widest =
      std::max({c.hidden_size, c.intermediate_size, c.vocab_size, c.num_heads * c.head_dim});
  std::vector<float> x(static_cast<std::size_t>(n * widest), 0.01f), y(x.size());
  const double t0 = cpu_seconds();
  for (const auto& layer : m.layers)
    for (const auto& w : layer.proj) frozen_matmul(w, x.data(), n, y.data());
  frozen_matmul(m.head(), x.data(), 1, y.data());
  return cpu_seconds() - t0;
}

// One token's products on a fixed input, grouped as the decode step runs them: q, k and v in one
// pass of the threads; o; gate and up in one pass; down (a fused checkpoint's qkv and gate_up
// each alone); then the head.
void step_products(const Model& m, const float* x, float* y, GemvActivations activations) {
  const std::vector<std::vector<Proj>> groups = {
      {Proj::q, Proj::k, Proj::v}, {Proj::qkv},     {Proj::o},
      {Proj::gate, Proj::up},      {Proj::gate_up}, {Proj::down}};
  for (const auto& layer : m.layers)
    for (const auto& group : groups) {
      std::vector<GemvProduct> products;
      int64_t offset = 0;  // disjoint outputs: the products run on different threads
      for (const Proj p : group)
        if (layer.at(p).rows > 0) {
          products.push_back({&layer.at(p), y + offset});
          offset += layer.at(p).rows;
        }
      if (!products.empty()) frozen_gemv(products, x, 1, activations);
    }
  const GemvProduct head{&m.head(), y};
  frozen_gemv({&head, 1}, x, 1, activations);
}

double products_seconds(const Model& m, int reps, GemvActivations activations, std::size_t& bytes,
                        double& cpu) {
  const ModelConfig& c = m.config;
  const int64_t widest =
      std::max({c.hidden_size, c.intermediate_size, c.vocab_size, c.num_heads * c.head_dim});
  std::vector<float> x(static_cast<std::size_t>(widest), 0.01f), y(3 * x.size());
  bytes = m.head().stored_bytes();
  for (const auto& layer : m.layers)
    for (const auto& w : layer.proj) bytes += w.stored_bytes();
  std::vector<double> times, cpus;
  for (int r = 0; r < reps + 1; ++r) {
    const auto t0 = clock_type::now();
    const double c0 = cpu_seconds();
    step_products(m, x.data(), y.data(), activations);
    if (r > 0) times.push_back(seconds_since(t0));
    if (r > 0) cpus.push_back(cpu_seconds() - c0);
  }
  std::sort(times.begin(), times.end());
  std::sort(cpus.begin(), cpus.end());
  cpu = cpus[cpus.size() / 2];
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  lora::restart_with_start_settings(argv);  // the weights in huge pages, as lora generate has them
  lora::keep_freed_memory_for_reuse();      // and freed memory kept, as lora has it
  if (argc < 2) {
    std::fprintf(stderr,
                 "usage: %s MODEL [--threads N] [--prompt 32] [--tokens 32] [--kv-cache f16] "
                 "[--decode-activations int8]\n",
                 argv[0]);
    return 2;
  }
  int threads = 1, prompt = 32, tokens = 32;
  KVCacheType kv_cache = KVCacheType::F32;
  GemvActivations activations = GemvActivations::F32;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--kv-cache") && !std::strcmp(argv[i + 1], "f16"))
      kv_cache = KVCacheType::F16;
    if (!std::strcmp(argv[i], "--decode-activations"))
      activations = gemv_activations_named(argv[i + 1]);
    if (!std::strcmp(argv[i], "--threads")) threads = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--prompt")) prompt = std::atoi(argv[i + 1]);
    if (!std::strcmp(argv[i], "--tokens")) tokens = std::atoi(argv[i + 1]);
  }
  omp_set_num_threads(threads);
  openblas_set_num_threads(threads);  // the prompt's sgemm on the same threads, as lora sets it
  LoadOptions load;                   // as lora generate loads for its decode activations
  load.int8_decode_layout = activations == GemvActivations::Int8;
  const Model m = load_model(argv[1], load);
  KVCache cache = KVCache::create(m.config, prompt + 2 * tokens + 2, kv_cache);
  std::vector<int32_t> ids(static_cast<std::size_t>(prompt));
  for (int i = 0; i < prompt; ++i) ids[i] = 3 + i;
  const auto p0 = clock_type::now();
  forward_cached(m, {}, cache, ids, CachedLogits::Last);
  const double prefill = seconds_since(p0);
  double prefill_products = 1e30;  // best of three
  for (int r = 0; r < 3; ++r)
    prefill_products = std::min(prefill_products, prompt_products_seconds(m, prompt));
  // In blocks, not step by step: OpenMP's idle workers spin for a few milliseconds after a
  // region, taking the core a team's worker needs (a median over a block leaves that out). The
  // blocks go OpenMP, team, team, OpenMP, so both see the cache grow alike (the keys and values
  // read at a step grow with it: at 300 positions a sixth of SmolLM2-135M's 4-bit weights).
  SpinTeam team(threads);
  std::vector<double> steps, openmp_steps;
  const int block = std::max(1, tokens / 2);
  for (int t = 0; t < 4 * block; ++t) {
    const int32_t id = 3 + t;
    const bool on_openmp = t / block == 0 || t / block == 3;
    const auto t0 = clock_type::now();
    {
      std::optional<SpinTeamScope> on_team;
      if (!on_openmp) on_team.emplace(&team);
      forward_cached(m, {}, cache, {&id, 1}, CachedLogits::Last, activations);
    }
    (on_openmp ? openmp_steps : steps).push_back(seconds_since(t0));
  }
  std::sort(steps.begin(), steps.end());
  std::sort(openmp_steps.begin(), openmp_steps.end());
  std::size_t bytes = 0;
  double cpu = 0;
  const SpinTeamScope on_team(&team);
  const double products = products_seconds(m, tokens, activations, bytes, cpu);
  const double step = steps[steps.size() / 2];
  std::printf(
      "{\"model\": \"%s\", \"threads\": %d, \"isa\": \"%.*s\", \"step_ms\": %.3f, "
      "\"openmp_step_ms\": %.3f, "
      "\"products_ms\": %.3f, \"products_share\": %.3f, \"product_bytes\": %zu, "
      "\"products_gbps\": %.3f, \"products_cpu_ms\": %.3f, \"bytes_per_cpu_ns\": %.3f, "
      "\"prefill_ms\": %.3f, \"prefill_products_cpu_ms\": %.3f, \"kv_cache\": \"%s\", "
      "\"decode_activations\": \"%s\"}\n",
      argv[1], threads, int(gemv_isa_name(gemv_isa()).size()), gemv_isa_name(gemv_isa()).data(),
      step * 1e3, openmp_steps[openmp_steps.size() / 2] * 1e3, products * 1e3, products / step,
      bytes, double(bytes) / products / 1e9, cpu * 1e3, double(bytes) / cpu / 1e9, prefill * 1e3,
      prefill_products * 1e3, kv_cache == KVCacheType::F16 ? "f16" : "f32",
      activations == GemvActivations::Int8 ? "int8" : "f32");
  return 0;
}
