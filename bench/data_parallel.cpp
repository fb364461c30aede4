// Data-parallel training step time: the SmolLM2-135M (or Qwen2.5-0.5B) shape with random 4-bit
// weights, LoRA r=8 on all 7 projections, AdamW, one global batch of --micro-batches x --batch
// sequences of --seq tokens per step, split over the ranks as `lora train` splits it. Run it
// alone for one process, under mpirun for several:
//
//   build/bench/data_parallel --threads 1 --micro-batches 2 --batch 1 --seq 256 --json one.json
//   mpirun -np 2 build/bench/data_parallel --threads 1 --micro-batches 2 --batch 1 --seq 256
//
// Rank 0 prints one JSON object: tokens/s, the seconds per step in compute (forward, backward,
// optimizer) and in the gradient all-reduce, and the gradient bytes each rank sends per step.
#include "trainer/data_parallel.h"

#include <omp.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "autograd/cpu_features.h"
#include "autograd/heap.h"
#include "autograd/process_start.h"
#include "bench/bench_args.h"
#include "trainer/distributed.h"
#include "trainer/optimizer.h"
#include "trainer/random_model.h"

extern "C" void openblas_set_num_threads(int);

namespace {

using lora::bench::seconds_since;

struct Args : lora::bench::TrainArgs {
  int64_t micro_batches = 2;
  int threads = 1;
  bool ordered = false;
};

Args parse(int argc, char** argv) {
  Args a;
  lora::bench::parse_flags(argc, argv, [&](const std::string& k, auto& value) {
    if (lora::bench::parse_train_flag(k, value, a)) return true;
    if (k == "--micro-batches")
      a.micro_batches = std::stoll(value());
    else if (k == "--threads")
      a.threads = std::stoi(value());
    else if (k == "--deterministic-reduction")
      a.ordered = true;
    else
      return false;
    return true;
  });
  if (a.micro_batches < 1 || a.batch < 1 || a.seq < 2 || a.steps < 1 || a.threads < 1)
    throw std::invalid_argument("need micro-batches, batch, steps, threads >= 1 and seq >= 2");
  return a;
}

// The published config.json fields of the two benchmark shapes.
lora::ModelConfig shape_config(const std::string& name) {
  nlohmann::json j;
  if (name == "smollm2-135m")
    j = {{"model_type", "llama"},      {"hidden_size", 576},       {"num_hidden_layers", 30},
         {"num_attention_heads", 9},   {"num_key_value_heads", 3}, {"intermediate_size", 1536},
         {"vocab_size", 49152},        {"rope_theta", 100000.0},   {"rms_norm_eps", 1e-5},
         {"tie_word_embeddings", true}};
  else if (name == "qwen2.5-0.5b")
    j = {{"model_type", "qwen2"},      {"hidden_size", 896},       {"num_hidden_layers", 24},
         {"num_attention_heads", 14},  {"num_key_value_heads", 2}, {"intermediate_size", 4864},
         {"vocab_size", 151936},       {"rope_theta", 1000000.0},  {"rms_norm_eps", 1e-6},
         {"tie_word_embeddings", true}};
  else
    throw std::invalid_argument("--shape must be smollm2-135m or qwen2.5-0.5b, got " + name);
  return lora::ModelConfig::from_json(j, name);
}

// Random token sequences, every target trained.
std::vector<lora::data::Example> random_examples(int64_t count, int64_t seq, int64_t vocab) {
  std::vector<lora::data::Example> out(static_cast<std::size_t>(count));
  for (int64_t e = 0; e < count; ++e)
    for (int64_t t = 0; t <= seq; ++t) {
      const uint64_t h = lora::data::mix64(uint64_t(e) * 1000003u + uint64_t(t));
      out[std::size_t(e)].ids.push_back(int32_t(h % uint64_t(vocab)));
      out[std::size_t(e)].trained.push_back(1);
    }
  return out;
}

}  // namespace

int main(int argc, char** argv) try {
  lora::restart_with_start_settings(argv);  // OpenBLAS's cap and glibc's huge pages: a fresh start
  const Args args = parse(argc, argv);
  lora::keep_freed_memory_for_reuse();
  omp_set_num_threads(args.threads);
  openblas_set_num_threads(args.threads);
  lora::DistributedOptions dopt;
  dopt.on_fatal = [](const std::string& m) {
    std::fprintf(stderr, "data_parallel: %s\n", m.c_str());
  };
  const auto comm = lora::join_job(dopt);

  const lora::ModelConfig config = shape_config(args.shape);
  const lora::Model model = lora::make_random_model(config, 1, 4, 64);
  lora::LoraConfig lc;
  lc.rank = 8;
  lc.alpha = 16.0f;
  lc.keys = {lora::Proj::q,    lora::Proj::k,  lora::Proj::v,   lora::Proj::o,
             lora::Proj::gate, lora::Proj::up, lora::Proj::down};
  lora::LoraAdapter adapter = lora::LoraAdapter::create(model, lc, 7);
  const auto params = adapter.parameters();
  lora::Optimizer optimizer(lora::OptimizerConfig{}, params);

  const auto examples =
      random_examples(args.micro_batches * args.batch, args.seq, config.vocab_size);
  const lora::data::BatchPlan plan(examples, args.batch, 3);
  lora::GradientExchange exchange(params, args.micro_batches, args.ordered, *comm);
  const lora::StepSetup setup{model, adapter, plan, args.micro_batches, 7, lora::ForwardOptions{}};
  lora::data::DataCursor cursor;

  // CPU seconds too: on a shared machine the ranks get less than a core each, and the CPU time
  // per step is what a machine of one's own would spend.
  double step_total = 0, reduce_total = 0, cpu_total = 0;
  int64_t tokens = 0;
  std::vector<double> step_s;
  for (int step = 1; step <= args.warmup + args.steps; ++step) {
    const double reduce_before = exchange.reduce_seconds();
    const auto t0 = std::chrono::steady_clock::now();
    const std::clock_t c0 = std::clock();
    lora::LocalStep local = lora::accumulate_shares(setup, step, cursor, exchange, *comm);
    const double loss = lora::exchange_step(local.micro_losses, exchange, *comm);
    optimizer.step(1e-4f);
    const double dt = seconds_since(t0);
    const double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
    if (comm->is_root())
      std::fprintf(stderr, "step %d: %.2f s (all-reduce %.3f s), loss %.4f\n", step, dt,
                   exchange.reduce_seconds() - reduce_before, loss);
    if (step <= args.warmup) continue;
    step_s.push_back(dt);
    step_total += dt;
    cpu_total += cpu;
    reduce_total += exchange.reduce_seconds() - reduce_before;
    tokens += local.tokens;
  }
  if (!comm->is_root()) return 0;
  const double steps = double(args.steps);
  nlohmann::json out = {{"shape", args.shape},
                        {"ranks", comm->size()},
                        {"threads_per_rank", args.threads},
                        {"cpu", nlohmann::json::parse(lora::cpu_report().json())},
                        {"micro_batches", args.micro_batches},
                        {"batch", args.batch},
                        {"seq", args.seq},
                        {"deterministic_reduction", args.ordered},
                        {"steps", args.steps},
                        {"step_s", step_s},
                        {"tokens_per_s", double(tokens) / step_total},
                        {"allreduce_s_per_step", reduce_total / steps},
                        {"compute_s_per_step", (step_total - reduce_total) / steps},
                        {"rank0_cpu_s_per_step", cpu_total / steps},
                        {"lora_parameters", adapter.num_parameters()},
                        {"gradient_bytes", adapter.num_parameters() * 4},
                        {"sent_bytes_per_rank_per_step", exchange.floats_per_step() * 4}};
  const std::string text = out.dump();
  std::cout << text << std::endl;
  if (!args.json_path.empty()) std::ofstream(args.json_path) << text << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "data_parallel: %s\n", e.what());
  return 2;
}
