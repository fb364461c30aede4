#include "trainer/train_memory.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "trainer/gguf_model.h"
#include "trainer/setting_error.h"

namespace lora {

namespace {

struct RunModel {
  ModelConfig config;
  uint64_t stored_bytes = 0;     // the base as loaded with the run's --quantize
  uint64_t quantized_bytes = 0;  // the base quantized to 4 bits at load
};

RunModel read_run_model(const TrainOptions& o) {
  RunModel m;
  if (is_gguf_file(o.model)) {
    // A GGUF base keeps its stored block types whatever the run asks for.
    m.config = gguf_model_config(GgufFile::open(o.model));
    m.stored_bytes = m.quantized_bytes = std::filesystem::file_size(o.model);
    return m;
  }
  m.config = ModelConfig::load(o.model);
  m.stored_bytes = base_bytes_of(o.model, int(o.quantize), int(o.q_group_size));
  m.quantized_bytes = base_bytes_of(o.model, 4, int(o.q_group_size));
  return m;
}

MemoryEstimate estimate(const TrainOptions& o, const RunModel& m, uint64_t base, int64_t seq) {
  std::vector<Proj> keys;
  for (const auto& k : o.lora_keys)
    if (auto p = proj_from_name(k)) keys.push_back(*p);
  MemoryRunShape run;
  run.trainable_parameters = o.fine_tune_type == "full"
                                 ? full_parameter_count(m.config, o.num_layers)
                                 : lora_parameter_count(m.config, o.rank, keys, o.num_layers);
  run.optimizer_slots = o.optimizer == "sgd" ? (o.momentum > 0 ? 1 : 0) : 2;
  run.batch = o.batch_size;
  run.seq = seq;
  run.checkpointing = o.grad_checkpoint;
  return estimate_training_memory(m.config, base, run, resident_memory_bytes());
}

// The settings, each changed alone (and all together), that bring the estimate under `available`.
std::vector<SettingChanges> settings_that_fit(const TrainOptions& o, const RunModel& m, int64_t seq,
                                              uint64_t available) {
  std::vector<SettingChanges> out;
  const bool full = o.fine_tune_type == "full";
  auto fits = [&](const TrainOptions& v, uint64_t base, int64_t s) {
    return estimate(v, m, base, s).to_allocate() <= available;
  };
  const SettingChange checkpoint{"grad_checkpoint", ""}, quantize{"quantize", "4"};
  if (!o.grad_checkpoint) {
    TrainOptions v = o;
    v.grad_checkpoint = true;
    if (fits(v, m.stored_bytes, seq)) out.push_back({checkpoint});
  }
  for (int64_t b = o.batch_size / 2; b >= 1; b /= 2) {
    TrainOptions v = o;
    v.batch_size = b;
    if (fits(v, m.stored_bytes, seq)) {
      out.push_back({{"batch_size", std::to_string(b)}});
      break;
    }
  }
  for (int64_t s = seq / 2; s >= 64; s /= 2)
    if (fits(o, m.stored_bytes, s)) {
      out.push_back({{"max_seq_length", std::to_string(s)}});
      break;
    }
  if (full) {
    const int64_t layers = o.num_layers < 0 ? m.config.num_layers : o.num_layers;
    for (int64_t n = layers / 2; n >= 1; n /= 2) {
      TrainOptions v = o;
      v.num_layers = n;
      if (fits(v, m.stored_bytes, seq)) {
        out.push_back({{"num_layers", std::to_string(n)}});
        break;
      }
    }
    if (o.optimizer != "sgd") {
      TrainOptions v = o;
      v.optimizer = "sgd";
      v.momentum = 0;
      if (fits(v, m.stored_bytes, seq)) out.push_back({{"optimizer", "sgd"}});
    }
  }
  const bool can_quantize = !full && o.quantize == 0 && !m.config.quant_bits;
  if (can_quantize && fits(o, m.quantized_bytes, seq)) out.push_back({quantize});
  if (out.empty()) {
    TrainOptions v = o;
    v.grad_checkpoint = true;
    v.batch_size = 1;
    SettingChanges all = {checkpoint, {"batch_size", "1"}};
    const uint64_t base = can_quantize ? m.quantized_bytes : m.stored_bytes;
    if (can_quantize) all.push_back(quantize);
    if (full) {
      v.num_layers = 1;
      all.push_back({"num_layers", "1"});
    }
    if (fits(v, base, seq)) out.push_back(all);
  }
  return out;
}

}  // namespace

MemoryEstimate estimate_run_memory(const TrainOptions& o, int64_t seq) {
  const RunModel m = read_run_model(o);
  return estimate(o, m, m.stored_bytes, seq);
}

std::optional<uint64_t> memory_available_to_runs() {
  if (const char* v = std::getenv("LORA_AVAILABLE_MEMORY")) return std::stoull(v);
  return available_memory_bytes();
}

int64_t longest_sequence(const data::EncodedSet& set) {
  std::size_t longest = 1;
  for (const auto& ex : set.examples) longest = std::max(longest, ex.ids.size());
  return int64_t(longest);
}

std::string describe(const MemoryEstimate& e) {
  auto mib = [](uint64_t b) { return std::to_string((b + (1u << 19)) >> 20); };
  return format_mib(e.total()) + " (base " + mib(e.base) + ", trained values " + mib(e.trained) +
         ", gradients " + mib(e.gradients) + ", optimizer moments " + mib(e.moments) +
         ", activations " + mib(e.activations) + ", transient " + mib(e.transient) + ", process " +
         mib(e.resident) + ")";
}

void check_run_fits(const TrainOptions& o, int64_t seq, uint64_t available) {
  const RunModel m = read_run_model(o);
  const MemoryEstimate e = estimate(o, m, m.stored_bytes, seq);
  if (e.to_allocate() <= available) return;
  std::string problem = "this run needs about " + format_mib(e.to_allocate()) +
                        " more memory (a peak of " + describe(e) + ") for batches of " +
                        std::to_string(o.batch_size) + " x " + std::to_string(seq) +
                        " tokens, but " + format_mib(available) + " are available";
  auto fixes = settings_that_fit(o, m, seq, available);
  if (fixes.empty())
    problem +=
        "; no smaller batch or sequence, gradient checkpointing or 4-bit quantization makes it fit";
  throw AdvisedError(problem, "; it fits with ", std::move(fixes));
}

}  // namespace lora
