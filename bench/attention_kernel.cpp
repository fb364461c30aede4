// The training attention kernels alone (kernels_attention.h): one layer's causal forward and
// backward over batch x seq tokens, with the heads of a model shape, timed apart from the rest of
// a step so that a change to the kernels can be measured against the commit before it.
//
//   build/bench/attention_kernel [--heads 14] [--kv-heads 2] [--head-dim 64] [--batch 4]
//       [--seq 512] [--reps 7] [--json FILE]
// Defaults are Qwen2.5-0.5B's heads; SmolLM2-135M's are --heads 9 --kv-heads 3. Prints the median
// milliseconds of each pass over the timed repetitions (the first only warms) and GFLOP/s counted
// as the causal FLOPs the kernel does: 4 * head_dim per visible (query, key) pair forward, twice
// that backward (its four GEMMs; the score recomputation not counted).
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/heap.h"
#include "autograd/kernels/kernels_attention.h"
#include "autograd/process_start.h"
#include "bench/bench_args.h"

extern "C" void openblas_set_num_threads(int);

namespace {

struct Args {
  lora::kernels::AttentionShape shape{4, 512, 512, 14, 2, 64};
  int reps = 7;
  std::string json_path;
};

Args parse(int argc, char** argv) {
  Args a;
  lora::bench::parse_flags(argc, argv, [&](const std::string& k, auto& value) {
    if (k == "--heads")
      a.shape.heads = std::stoll(value());
    else if (k == "--kv-heads")
      a.shape.kv_heads = std::stoll(value());
    else if (k == "--head-dim")
      a.shape.head_dim = std::stoll(value());
    else if (k == "--batch")
      a.shape.batch = std::stoll(value());
    else if (k == "--seq")
      a.shape.seq_q = a.shape.seq_k = std::stoll(value());
    else if (k == "--reps")
      a.reps = std::stoi(value());
    else if (k == "--json")
      a.json_path = value();
    else
      return false;
    return true;
  });
  const auto& s = a.shape;
  if (s.heads < 1 || s.kv_heads < 1 || s.heads % s.kv_heads || s.head_dim < 1 || s.batch < 1 ||
      s.seq_q < 1 || a.reps < 1)
    throw std::invalid_argument("heads must be a multiple of kv-heads; every size positive");
  return a;
}

std::vector<float> random_values(std::size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(n);
  for (float& x : v) x = normal(rng);
  return v;
}

double median_ms(std::vector<double> seconds) {
  std::sort(seconds.begin(), seconds.end());
  return 1e3 * seconds[seconds.size() / 2];
}

}  // namespace

int main(int argc, char** argv) try {
  lora::restart_with_start_settings(argv);
  lora::keep_freed_memory_for_reuse();
  const Args args = parse(argc, argv);
  openblas_set_num_threads(omp_get_max_threads());
  const lora::kernels::AttentionShape& s = args.shape;
  const auto nq = static_cast<std::size_t>(s.batch * s.seq_q * s.q_stride());
  const auto nk = static_cast<std::size_t>(s.batch * s.seq_k * s.kv_stride());
  const std::vector<float> q = random_values(nq, 1), k = random_values(nk, 2),
                           v = random_values(nk, 3), g = random_values(nq, 4);
  std::vector<float> out(nq), lse(static_cast<std::size_t>(s.batch * s.heads * s.seq_q));
  std::vector<float> dq(nq), dk(nk), dv(nk);
  std::vector<double> forward_s, backward_s;
  for (int r = 0; r < args.reps + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    lora::kernels::attention_forward(q.data(), k.data(), v.data(), s, nullptr, out.data(),
                                     lse.data());
    const auto t1 = std::chrono::steady_clock::now();
    lora::kernels::attention_backward(q.data(), k.data(), v.data(), out.data(), lse.data(),
                                      g.data(), s, nullptr, dq.data(), dk.data(), dv.data());
    const auto t2 = std::chrono::steady_clock::now();
    if (r == 0) continue;
    forward_s.push_back(std::chrono::duration<double>(t1 - t0).count());
    backward_s.push_back(std::chrono::duration<double>(t2 - t1).count());
  }
  const double pairs = double(s.batch * s.heads) * double(s.seq_q) * double(s.seq_q + 1) / 2;
  const double forward_gflop = 4.0 * double(s.head_dim) * pairs / 1e9;
  nlohmann::json result;
  result["bench"] = "attention_kernel";
  result["threads"] = omp_get_max_threads();
  result["shape"] = {{"batch", s.batch},
                     {"seq", s.seq_q},
                     {"heads", s.heads},
                     {"kv_heads", s.kv_heads},
                     {"head_dim", s.head_dim}};
  result["forward_ms"] = median_ms(forward_s);
  result["backward_ms"] = median_ms(backward_s);
  result["forward_gflops"] = forward_gflop / (double(result["forward_ms"]) / 1e3);
  result["backward_gflops"] = 2 * forward_gflop / (double(result["backward_ms"]) / 1e3);
  std::fprintf(stderr,
               "attention %lld x %lld, %lld/%lld heads of %lld, %d threads: forward %.2f ms "
               "(%.0f GFLOP/s), backward %.2f ms (%.0f GFLOP/s)\n",
               static_cast<long long>(s.batch), static_cast<long long>(s.seq_q),
               static_cast<long long>(s.heads), static_cast<long long>(s.kv_heads),
               static_cast<long long>(s.head_dim), omp_get_max_threads(),
               double(result["forward_ms"]), double(result["forward_gflops"]),
               double(result["backward_ms"]), double(result["backward_gflops"]));
  const std::string text = result.dump();
  std::cout << text << std::endl;
  if (!args.json_path.empty()) std::ofstream(args.json_path) << text << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "attention_kernel: %s\n", e.what());
  return 1;
}
