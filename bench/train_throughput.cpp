// LoRA training throughput and memory on random-weight models of real shapes.
//
// One process measures one configuration (so its peak RSS is that configuration's): a model of
// the chosen shape with random weights stored as f32, bf16, 4-bit (MLX affine, group 64, the
// tied embedding too) or GGUF Q4_K_M (llama-quantize's mix, made in memory: Q4_K, Q6_K on the
// embedding and on attn_v/ffn_down of some layers, its fallbacks where rows are not whole
// 256-blocks), LoRA on all 7 projections of every block, AdamW; `warmup` steps, then
// `steps` timed steps of forward + backward + optimizer step. scripts/bench_train.py runs the
// matrix of configurations beside the PyTorch baseline and the sgemm peak.
//
//   build/bench/train_throughput --shape smollm2-135m --base q4|q4_k_m --batch 4 --seq 512
//       [--steps 2] [--warmup 1] [--grad-checkpoint] [--compute-dtype f32|bf16] [--rank 8]
//       [--layers N] [--profile] [--default-heap] [--json out.json]
// Prints a summary (and the per-op time table with --profile) and one JSON object on the last
// line. The JSON always holds the per-op split ("profile_per_step") and the step's time by class
// of work with the GFLOP/s each class achieved ("op_classes").
#include <malloc.h>
#include <omp.h>
#include <sys/resource.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "autograd/cpu_features.h"
#include "autograd/dtype.h"
#include "autograd/heap.h"
#include "autograd/kernels/matmul_bf16.h"
#include "autograd/process_start.h"
#include "autograd/profile.h"
#include "autograd/quant.h"
#include "bench/bench_args.h"
#include "trainer/gguf_model.h"
#include "trainer/gguf_type_plan.h"
#include "trainer/lora.h"
#include "trainer/memory_estimate.h"
#include "trainer/model.h"
#include "trainer/optimizer.h"
#include "trainer/transformer.h"

namespace {

using lora::FrozenWeight;
using lora::bench::seconds_since;

struct Args : lora::bench::TrainArgs {
  Args() { batch = 4, seq = 512; }
  std::string base = "q4";  // f32 | bf16 | q4 | q4_k_m
  std::string compute_dtype = "f32";
  int64_t layers = 0;
  int rank = 8;
  bool grad_checkpoint = false, profile = false;
  bool default_heap = false;  // glibc's defaults instead of keep_freed_memory_for_reuse()
};

Args parse(int argc, char** argv) {
  Args a;
  lora::bench::parse_flags(argc, argv, [&](const std::string& k, auto& value) {
    if (lora::bench::parse_train_flag(k, value, a)) return true;
    if (k == "--base")
      a.base = value();
    else if (k == "--compute-dtype")
      a.compute_dtype = value();
    else if (k == "--layers")
      a.layers = std::stoll(value());
    else if (k == "--rank")
      a.rank = std::stoi(value());
    else if (k == "--grad-checkpoint")
      a.grad_checkpoint = true;
    else if (k == "--profile")
      a.profile = true;
    else if (k == "--default-heap")
      a.default_heap = true;
    else
      return false;
    return true;
  });
  if (a.base != "f32" && a.base != "bf16" && a.base != "q4" && a.base != "q4_k_m")
    throw std::invalid_argument("--base must be f32, bf16, q4 or q4_k_m, got " + a.base);
  lora::compute_dtype_named(a.compute_dtype);  // throws on a bad name
  if (a.steps < 1 || a.warmup < 0 || a.batch < 1 || a.seq < 2)
    throw std::invalid_argument("need steps >= 1, warmup >= 0, batch >= 1, seq >= 2");
  return a;
}

lora::ModelConfig shape_config(const std::string& name) {
  lora::ModelConfig c;
  if (name == "smollm2-135m") {
    c.model_type = "llama";
    c.hidden_size = 576, c.num_layers = 30, c.num_heads = 9, c.num_kv_heads = 3;
    c.intermediate_size = 1536, c.vocab_size = 49152;
    c.rope_theta = 100000.0f, c.rms_norm_eps = 1e-5f;
  } else if (name == "qwen2.5-0.5b") {
    c.model_type = "qwen2";
    c.hidden_size = 896, c.num_layers = 24, c.num_heads = 14, c.num_kv_heads = 2;
    c.intermediate_size = 4864, c.vocab_size = 151936;
    c.rope_theta = 1000000.0f, c.rms_norm_eps = 1e-6f;
    c.attention_bias = true;
  } else if (name == "gemma3-270m") {
    // google/gemma-3-270m: head_dim 256, one KV head, five sliding layers (512) per global one.
    c.model_type = "gemma3_text";
    c.hidden_size = 640, c.num_layers = 18, c.num_heads = 4, c.num_kv_heads = 1;
    c.intermediate_size = 2048, c.vocab_size = 262144;
    c.rope_theta = 1000000.0f, c.rms_norm_eps = 1e-6f;
    c.head_dim = 256;
    c.hidden_act = lora::Activation::gelu_tanh;
    c.qk_norm = c.sandwich_norms = c.norm_plus_one = c.scale_embeddings = true;
    c.query_pre_attn_scalar = 256.0f;
    c.rope_local_theta = 10000.0f;
    c.sliding_window = 512;
    for (int64_t l = 0; l < c.num_layers; ++l) c.sliding_layers.push_back((l + 1) % 6 != 0);
  } else {
    throw std::invalid_argument("--shape must be smollm2-135m, qwen2.5-0.5b or gemma3-270m, got " +
                                name);
  }
  if (c.head_dim == 0) c.head_dim = c.hidden_size / c.num_heads;
  c.tie_word_embeddings = true;
  return c;
}

// Uniform values with standard deviation 0.02 (|w| <= 0.0346), from a counter-based hash so that
// blocks fill in parallel and the same seed gives the same model.
float random_weight(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + i;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return float((double(z >> 11) * 0x1.0p-53 * 2.0 - 1.0) * 0.034641);
}

void fill_random(float* out, int64_t count, uint64_t seed, int64_t first = 0) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < count; ++i) out[i] = random_weight(seed, uint64_t(first + i));
}

// A random [rows, cols] GGUF weight in the type llama-quantize's Q4_K_M gives tensor `name` of a
// model of `layers` blocks with a tied embedding, made a row at a time.
FrozenWeight random_ggml(const std::string& name, int64_t layers, int64_t rows, int64_t cols,
                         uint64_t seed) {
  const lora::GgmlType t =
      lora::GgufTypePlan::parse("q4_k_m")->type_of(name, 2, cols, layers, true);
  const uint64_t rb = lora::ggml_row_bytes(t, cols);
  std::vector<std::byte> bytes(rb * static_cast<uint64_t>(rows));
#pragma omp parallel
  {
    std::vector<float> row(static_cast<std::size_t>(cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      fill_random(row.data(), cols, seed, r * cols);
      lora::ggml_quantize_row(t, row.data(), cols, bytes.data() + r * rb);
    }
  }
  return FrozenWeight::from_ggml(lora::GgmlMatrix::owning(rows, cols, t, bytes));
}

// A random [rows, cols] frozen weight in the benchmark's storage format (`name`: its GGUF name,
// for q4_k_m). 4-bit weights are made a block of rows at a time, so the f32 original never
// exists whole (it would inflate peak RSS).
FrozenWeight random_frozen(const std::string& base, int64_t rows, int64_t cols, uint64_t seed,
                           const std::string& name = "", int64_t layers = 0) {
  if (base == "q4_k_m") return random_ggml(name, layers, rows, cols, seed);
  if (base == "f32") {
    std::vector<float> w(static_cast<std::size_t>(rows * cols));
    fill_random(w.data(), rows * cols, seed);
    return FrozenWeight::from_f32(std::move(w), rows, cols);
  }
  if (base == "bf16") {
    std::vector<uint16_t> w(static_cast<std::size_t>(rows * cols));
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < rows * cols; ++i)
      w[i] = lora::f32_to_bf16(random_weight(seed, uint64_t(i)));
    return FrozenWeight::from_bf16(std::move(w), rows, cols);
  }
  constexpr int kBits = 4, kGroup = 64;
  lora::QuantizedMatrix q;
  q.rows = rows, q.cols = cols, q.bits = kBits, q.group_size = kGroup;
  q.scale_dtype = lora::DType::BF16;
  // Exact capacities: growing by insert would leave slack the size of the matrix, resident where
  // it lands on pages the build already touched.
  q.packed.reserve(static_cast<std::size_t>(rows * (cols * kBits / 32)));
  q.scales.reserve(static_cast<std::size_t>(rows * (cols / kGroup)));
  q.biases.reserve(q.scales.capacity());
  const int64_t block = 1024;
  std::vector<float> tmp;
  for (int64_t r0 = 0; r0 < rows; r0 += block) {
    const int64_t r1 = std::min(rows, r0 + block);
    tmp.resize(static_cast<std::size_t>((r1 - r0) * cols));
    fill_random(tmp.data(), (r1 - r0) * cols, seed, r0 * cols);
    const auto part = lora::quantize(tmp, r1 - r0, cols, kBits, kGroup, lora::DType::BF16);
    q.packed.insert(q.packed.end(), part.packed.begin(), part.packed.end());
    q.scales.insert(q.scales.end(), part.scales.begin(), part.scales.end());
    q.biases.insert(q.biases.end(), part.biases.begin(), part.biases.end());
  }
  return FrozenWeight::from_quantized(std::move(q));
}

lora::Model random_model(const lora::ModelConfig& c, const std::string& base) {
  lora::Model m;
  m.config = c;
  uint64_t seed = 1;
  m.embed =
      random_frozen(base, c.vocab_size, c.hidden_size, seed++, "token_embd.weight", c.num_layers);
  m.final_norm.assign(static_cast<std::size_t>(c.hidden_size), 1.0f);
  const int64_t q_out = c.num_heads * c.head_dim, kv_out = c.num_kv_heads * c.head_dim;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    lora::LayerWeights w;
    using lora::Proj;
    const std::pair<Proj, std::array<int64_t, 2>> shapes[] = {
        {Proj::q, {q_out, c.hidden_size}},
        {Proj::k, {kv_out, c.hidden_size}},
        {Proj::v, {kv_out, c.hidden_size}},
        {Proj::o, {c.hidden_size, q_out}},
        {Proj::gate, {c.intermediate_size, c.hidden_size}},
        {Proj::up, {c.intermediate_size, c.hidden_size}},
        {Proj::down, {c.hidden_size, c.intermediate_size}}};
    for (const auto& [p, shape] : shapes)
      w.at(p) = random_frozen(base, shape[0], shape[1], seed++, lora::gguf_proj_tensor(p, l),
                              c.num_layers);
    if (c.attention_bias) {
      for (auto* b : {&w.q_bias, &w.k_bias, &w.v_bias})
        b->resize(static_cast<std::size_t>(b == &w.q_bias ? q_out : kv_out));
      fill_random(w.q_bias.data(), q_out, seed++);
      fill_random(w.k_bias.data(), kv_out, seed++);
      fill_random(w.v_bias.data(), kv_out, seed++);
    }
    w.input_norm.assign(static_cast<std::size_t>(c.hidden_size), 1.0f);
    w.post_attention_norm.assign(static_cast<std::size_t>(c.hidden_size), 1.0f);
    if (c.qk_norm)
      for (auto* n : {&w.q_norm, &w.k_norm}) n->assign(static_cast<std::size_t>(c.head_dim), 1.0f);
    if (c.sandwich_norms)
      for (auto* n : {&w.pre_ffn_norm, &w.post_ffn_norm})
        n->assign(static_cast<std::size_t>(c.hidden_size), 1.0f);
    m.layers.push_back(std::move(w));
  }
  m.rope_inv_freq = c.rope_inv_freq();
  lora::set_family_constants(m);
  return m;
}

// Useful model FLOPs per trained token, by where they are done: the frozen matmuls' forward
// (2N, the head's logits included) and input gradient (2N), LoRA's rank-r products (forward
// 2r(in+out), backward input and weight gradients 4r(in+out)), causal attention (scores and
// weighted sum: 4 * q_width per visible key forward, twice that backward). The head's two
// products (logits, then softmax times the head for the hidden gradient) run together in the
// cross-entropy op, so they are a class of their own.
struct FlopSplit {
  double frozen_forward = 0, frozen_input_grad = 0, head = 0, lora = 0, attention = 0;
  double total() const { return frozen_forward + frozen_input_grad + head + lora + attention; }
};

FlopSplit flop_split(const lora::ModelConfig& c, int64_t seq, int rank) {
  const double h = double(c.hidden_size), q = double(c.num_heads * c.head_dim),
               kv = double(c.num_kv_heads * c.head_dim), inter = double(c.intermediate_size);
  const double per_layer = h * q * 2 + h * kv * 2 + 3 * h * inter;
  const double lora_per_layer = rank * ((h + q) * 2 + (h + kv) * 2 + (h + inter) * 3);
  const double avg_keys = (double(seq) + 1) / 2;
  FlopSplit f;
  f.frozen_forward = f.frozen_input_grad = 2 * c.num_layers * per_layer;
  f.head = 4 * double(c.vocab_size) * h;
  f.lora = c.num_layers * lora_per_layer * 6;
  f.attention = c.num_layers * 4 * q * avg_keys * 3;
  return f;
}

double flops_per_token(const lora::ModelConfig& c, int64_t seq, int rank) {
  return flop_split(c, seq, rank).total();
}

// Peak RSS of the process since the last reset_peak_rss() (VmHWM), in MiB.
double peak_rss_mib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;  // kB
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

// Restarts the peak RSS count at the current RSS (Linux >= 4.0), so that the f32 weights the
// random model is built from before quantizing do not count as training memory.
// The freed build buffers are handed back first (the heap keeps freed memory otherwise).
void reset_peak_rss() {
  malloc_trim(0);
  std::ofstream("/proc/self/clear_refs") << "5";
}

// n token ids in [0, vocab), a pure function of the seed.
std::vector<int32_t> random_ids(uint64_t seed, int64_t n, int64_t vocab) {
  std::vector<int32_t> ids(static_cast<std::size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    ids[i] = int32_t(uint64_t(random_weight(seed, uint64_t(i)) * 1e6 + 1e6) % vocab);
  return ids;
}

// Seconds per timed step of each op (forward, recompute, backward), the optimizer and what no
// op timed; with `print`, the table goes to stderr as well.
nlohmann::json profile_per_step(const lora::ag::OpProfile& profile, std::size_t timed_steps,
                                double total_s, double total_opt, bool print) {
  nlohmann::json ops = nlohmann::json::array();
  const double steps = double(timed_steps);
  for (const auto& e : profile.entries())
    ops.push_back({{"op", e.op},
                   {"forward_s", e.seconds[0] / steps},
                   {"recompute_s", e.seconds[1] / steps},
                   {"backward_s", e.seconds[2] / steps}});
  ops.push_back({{"op", "optimizer"},
                 {"forward_s", 0.0},
                 {"recompute_s", 0.0},
                 {"backward_s", total_opt / steps}});
  const double other = (total_s - profile.total_seconds() - total_opt) / steps;
  ops.push_back(
      {{"op", "untimed"}, {"forward_s", other}, {"recompute_s", 0.0}, {"backward_s", 0.0}});
  if (print)
    std::cerr << "per-op split, seconds summed over " << timed_steps << " timed step(s):\n"
              << profile.table() << "optimizer " << total_opt << " s, untimed " << other * steps
              << " s\n";
  return ops;
}

// The step's time by class of work, each with its share of the step and, where it does model
// FLOPs, the GFLOP/s it achieved (its FLOPs per step over its seconds per step). Recomputation
// under checkpointing counts as time of the forward class and adds no FLOPs.
nlohmann::json op_classes(const nlohmann::json& per_op, const FlopSplit& flops_per_token,
                          double tokens_per_step) {
  struct Class {
    const char* name;
    double flops_per_token;
    double seconds = 0;
  };
  std::vector<Class> classes = {{"frozen_forward", flops_per_token.frozen_forward},
                                {"frozen_input_grad", flops_per_token.frozen_input_grad},
                                {"lora", flops_per_token.lora},
                                {"head_cross_entropy", flops_per_token.head},
                                {"attention", flops_per_token.attention},
                                {"norms_rope_elementwise", 0},
                                {"optimizer", 0},
                                {"untimed", 0}};
  auto at = [&](const std::string& name) -> double& {
    for (Class& c : classes)
      if (name == c.name) return c.seconds;
    return classes[5].seconds;  // every other op is a norm, RoPE or elementwise op
  };
  double step_s = 0;
  for (const auto& e : per_op) {
    const std::string op = e["op"];
    const double fwd = double(e["forward_s"]) + double(e["recompute_s"]), bwd = e["backward_s"];
    step_s += fwd + bwd;
    if (op == "linear") {
      at("frozen_forward") += fwd;
      at("frozen_input_grad") += bwd;
    } else {
      const std::string name = op == "cross_entropy" ? "head_cross_entropy" : op;
      at(name) += fwd + bwd;
    }
  }
  nlohmann::json out = nlohmann::json::array();
  for (const Class& c : classes) {
    nlohmann::json row = {{"class", c.name},
                          {"seconds_per_step", c.seconds},
                          {"share", step_s > 0 ? c.seconds / step_s : 0.0}};
    if (c.flops_per_token > 0) {
      row["gflop_per_step"] = c.flops_per_token * tokens_per_step / 1e9;
      row["gflops"] = c.seconds > 0 ? c.flops_per_token * tokens_per_step / c.seconds / 1e9 : 0.0;
    }
    out.push_back(row);
  }
  return out;
}

// What scripts/bench_train.py compares with the PyTorch run's before it prints a ratio: the
// dtype is what the frozen matmuls really ran in (bf16 asked for on a CPU without bf16 units
// runs f32).
nlohmann::json conditions(const Args& args, const lora::ModelConfig& config,
                          const lora::ForwardOptions& fopts) {
  return {{"threads", omp_get_max_threads()},
          {"batch", args.batch},
          {"seq", args.seq},
          {"tokens_per_step", args.batch * args.seq},
          {"layers", config.num_layers},
          {"lora_targets", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"},
          {"rank", args.rank},
          {"dtype", lora::uses_bf16(fopts.compute_dtype) ? "bf16" : "f32"}};
}

// The floor the trainer checks a run against before loading (trainer/memory_estimate.h), and
// the measured peak over it.
void add_memory_floor(nlohmann::json& out, const Args& args, const lora::ModelConfig& config,
                      uint64_t stored_bytes, int64_t lora_params) {
  lora::MemoryRunShape run;
  run.trainable_parameters = lora_params;
  run.batch = args.batch;
  run.seq = args.seq;
  run.checkpointing = args.grad_checkpoint;
  const auto floor = lora::estimate_training_memory(config, stored_bytes, run);
  const double base_mib = double(floor.base) / (1 << 20);
  const double lora_mib = double(floor.trained + floor.gradients + floor.moments) / (1 << 20);
  const double act_mib = double(floor.activations) / (1 << 20);
  out["base_stored_mib"] = base_mib;
  out["lora_state_mib"] = lora_mib;
  out["must_live_activation_mib"] = act_mib;
  out["rss_floor_mib"] = base_mib + lora_mib + act_mib;
  out["rss_over_floor"] = peak_rss_mib() / (base_mib + lora_mib + act_mib);
}

}  // namespace

// What ran and what was asked for: the CPU features detected and in use (LORA_CPU), and the
// compute dtype that ran ("compute_dtype" is f32 where bf16 was asked for without bf16 units,
// so no f32 figure is ever reported as bf16).
nlohmann::json compute_report(const std::string& asked, lora::ComputeDType compute) {
  const bool bf16 = lora::uses_bf16(compute);
  return {{"compute_dtype", bf16 ? "bf16" : "f32"},
          {"compute_dtype_asked", asked},
          {"cpu", nlohmann::json::parse(lora::cpu_report().json())},
          {"bf16_isa", lora::bf16_matmul_isa()},
          {"bf16_used", bf16}};
}

int main(int argc, char** argv) try {
  lora::restart_with_start_settings(argv);  // OpenBLAS's cap and glibc's huge pages: a fresh start
  const Args args = parse(argc, argv);
  if (!args.default_heap) lora::keep_freed_memory_for_reuse();
  lora::ModelConfig config = shape_config(args.shape);
  if (args.layers > 0) config.num_layers = args.layers;
  const auto t_build = std::chrono::steady_clock::now();
  lora::Model model = random_model(config, args.base);
  const double build_s = seconds_since(t_build);
  reset_peak_rss();

  lora::LoraConfig lc;
  lc.rank = args.rank;
  lc.alpha = 2.0f * float(args.rank);
  lc.keys = {lora::Proj::q,    lora::Proj::k,  lora::Proj::v,   lora::Proj::o,
             lora::Proj::gate, lora::Proj::up, lora::Proj::down};
  lora::LoraAdapter adapter = lora::LoraAdapter::create(model, lc, 7);
  lora::Optimizer optimizer(lora::OptimizerConfig{}, adapter.parameters());
  lora::AdapterStack stack;
  stack.adapters = {&adapter};
  stack.training = true;
  lora::ForwardOptions fopts;
  fopts.grad_checkpoint = args.grad_checkpoint;
  fopts.compute_dtype = lora::compute_dtype_named(args.compute_dtype);

  const int64_t n = args.batch * args.seq;
  const std::vector<int32_t> ids = random_ids(99, n, config.vocab_size);
  const std::vector<int32_t> targets = random_ids(98, n, config.vocab_size);
  const std::vector<float> weights(ids.size(), 1.0f);

  lora::ag::OpProfile profile;
  std::vector<double> step_s, optimizer_s;
  std::vector<float> losses;
  for (int step = 0; step < args.warmup + args.steps; ++step) {
    const bool timed = step >= args.warmup;
    const auto t0 = std::chrono::steady_clock::now();
    float loss_value;
    {
      lora::ag::Tape tape;
      tape.set_release_values(true);          // as the trainer does
      if (timed) tape.set_profile(&profile);  // two clock reads per op call
      lora::ag::Var h =
          lora::forward_hidden(tape, model, stack, ids, args.batch, args.seq, {}, fopts);
      lora::ag::Var loss = lora::ag::cross_entropy_head(tape, h, model.head(), targets, weights,
                                                        float(n), model.config.final_logit_softcap);
      tape.backward(loss);
      loss_value = loss->value.data[0];
    }
    const auto t_opt = std::chrono::steady_clock::now();
    optimizer.step(1e-4f);
    const double opt_s = seconds_since(t_opt);
    const double dt = seconds_since(t0);
    losses.push_back(loss_value);
    if (timed) {
      step_s.push_back(dt);
      optimizer_s.push_back(opt_s);
    }
    std::fprintf(stderr, "step %d: %.2f s (optimizer %.3f s), loss %.4f\n", step, dt, opt_s,
                 loss_value);
  }

  double total_s = 0, total_opt = 0;
  for (double s : step_s) total_s += s;
  for (double s : optimizer_s) total_opt += s;
  const double tokens_per_s = double(n) * double(step_s.size()) / total_s;
  const double fpt = flops_per_token(config, args.seq, args.rank);
  const int64_t lora_params = adapter.num_parameters();

  nlohmann::json out;
  out["impl"] = "loracpp";
  out["shape"] = args.shape;
  out["layers"] = config.num_layers;
  out["base"] = args.base;
  out.update(compute_report(args.compute_dtype, fopts.compute_dtype));
  out["grad_checkpoint"] = args.grad_checkpoint;
  out["default_heap"] = args.default_heap;
  out["batch"] = args.batch;
  out["seq"] = args.seq;
  out["rank"] = args.rank;
  out["threads"] = omp_get_max_threads();
  out["warmup"] = args.warmup;
  out["steps"] = args.steps;
  out["build_s"] = build_s;
  out["step_s"] = step_s;
  out["optimizer_s"] = total_opt / double(step_s.size());
  out["losses"] = losses;
  out["tokens_per_s"] = tokens_per_s;
  out["flops_per_token"] = fpt;
  out["achieved_gflops"] = tokens_per_s * fpt / 1e9;
  out["peak_rss_mib"] = peak_rss_mib();
  add_memory_floor(out, args, config, model.stored_bytes(), lora_params);
  out["trainable_params"] = lora_params;
  out["conditions"] = conditions(args, config, fopts);
  out["profile_per_step"] =
      profile_per_step(profile, step_s.size(), total_s, total_opt, args.profile);
  out["op_classes"] =
      op_classes(out["profile_per_step"], flop_split(config, args.seq, args.rank), double(n));
  if (args.profile)
    for (const auto& c : out["op_classes"])
      std::fprintf(stderr, "%-24s %8.3f s/step %6.1f%% %8.1f GFLOP/s\n",
                   std::string(c["class"]).c_str(), double(c["seconds_per_step"]),
                   100.0 * double(c["share"]), c.contains("gflops") ? double(c["gflops"]) : 0.0);
  std::fprintf(stderr,
               "%s %s base=%s ckpt=%d: %.1f tokens/s, %.1f GFLOP/s, peak RSS %.0f MiB (%.2fx the "
               "floor of %.0f MiB)\n",
               args.shape.c_str(), std::string(out["compute_dtype"]).c_str(), args.base.c_str(),
               int(args.grad_checkpoint), tokens_per_s, tokens_per_s * fpt / 1e9, peak_rss_mib(),
               double(out["rss_over_floor"]), double(out["rss_floor_mib"]));
  const std::string text = out.dump();
  std::cout << text << std::endl;
  if (!args.json_path.empty()) std::ofstream(args.json_path) << text << "\n";
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_throughput: %s\n", e.what());
  return 2;
}
