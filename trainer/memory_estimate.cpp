#include "trainer/memory_estimate.h"

#include <algorithm>
#include <fstream>
#include <sstream>

#include "autograd/quant.h"
#include "trainer/io/safetensors.h"

namespace lora {

namespace fs = std::filesystem;

namespace {

// The [in, out] features of a block linear.
std::pair<int64_t, int64_t> proj_dims(const ModelConfig& c, Proj p) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  switch (p) {
    case Proj::q:
      return {h, q};
    case Proj::k:
    case Proj::v:
      return {h, kv};
    case Proj::o:
      return {q, h};
    case Proj::gate:
    case Proj::up:
      return {h, c.intermediate_size};
    case Proj::down:
      return {c.intermediate_size, h};
    case Proj::qkv:
      return {h, q + 2 * kv};
    case Proj::gate_up:
      return {h, 2 * c.intermediate_size};
  }
  return {0, 0};
}

// A matrix the loader holds as a FrozenWeight (block linears, the embeddings, an untied head):
// bf16 stays bf16, and quantizing at load applies. Other tensors (norms, biases) are held as f32.
bool is_frozen_matrix(const std::string& name) {
  const bool block_linear = name.rfind("model.layers.", 0) == 0 && name.size() > 12 &&
                            name.compare(name.size() - 12, 12, "_proj.weight") == 0;
  return block_linear || name == "model.embed_tokens.weight" || name == "lm_head.weight";
}

// One number from a cgroup v2 file ("max" and unreadable files give nullopt).
std::optional<uint64_t> read_cgroup_number(const fs::path& file) {
  std::ifstream in(file);
  std::string text;
  if (!(in >> text) || text == "max") return std::nullopt;
  try {
    return std::stoull(text);
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace

uint64_t activation_bytes(const ModelConfig& c, int64_t tokens, bool checkpointing) {
  const uint64_t h = uint64_t(c.hidden_size), q = uint64_t(c.num_heads * c.head_dim),
                 kv = uint64_t(c.num_kv_heads * c.head_dim), inter = uint64_t(c.intermediate_size);
  const uint64_t layers = uint64_t(c.num_layers);
  const uint64_t block = 4 * h + 2 * q + 2 * kv + 3 * inter;
  const uint64_t per_token = checkpointing ? layers * h + block : layers * block + h;
  return per_token * uint64_t(tokens) * sizeof(float);
}

int64_t lora_parameter_count(const ModelConfig& c, int64_t rank, const std::vector<Proj>& keys,
                             int64_t num_layers) {
  const int64_t layers = num_layers < 0 ? c.num_layers : std::min(num_layers, c.num_layers);
  int64_t per_layer = 0;
  for (Proj p : block_keys(c, keys)) {
    const auto [in, out] = proj_dims(c, p);
    per_layer += rank * (in + out);
  }
  return per_layer * layers;
}

int64_t full_parameter_count(const ModelConfig& c, int64_t num_layers) {
  const int64_t layers = num_layers < 0 ? c.num_layers : std::min(num_layers, c.num_layers);
  int64_t per_layer = 0;
  for (int p = 0; p < kNumProj; ++p) {
    const auto [in, out] = proj_dims(c, static_cast<Proj>(p));
    per_layer += in * out;
  }
  if (c.attention_bias) per_layer += (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  per_layer += 2 * c.hidden_size;  // input and post-attention norms
  if (c.sandwich_norms) per_layer += 2 * c.hidden_size;
  if (c.qk_norm) per_layer += 2 * c.head_dim;
  return per_layer * layers;
}

uint64_t base_bytes_of(const fs::path& model_dir, int quantize_bits, int group_size) {
  const WeightSet weights = WeightSet::open_dir(model_dir);
  uint64_t total = 0;
  for (const auto& name : weights.names()) {
    const TensorInfo& t = weights.info(name);
    const uint64_t n = uint64_t(t.numel());
    const bool is_float = t.dtype == DType::F32 || t.dtype == DType::F16 ||
                          t.dtype == DType::BF16 || t.dtype == DType::F64;
    const bool matrix = is_float && is_frozen_matrix(name) && t.shape.size() == 2;
    if (matrix && quantize_bits > 0 && quantizable(t.shape[1], quantize_bits, group_size)) {
      // Packed values, and a scale and a bias per group, held as f32 (rounded to the weight's own
      // type, but not stored in it).
      total += n * uint64_t(quantize_bits) / 8 + 2 * (n / uint64_t(group_size)) * sizeof(float);
    } else if (matrix && t.dtype == DType::BF16) {
      total += 2 * n;
    } else if (is_float) {
      total += 4 * n;
    } else {
      total += t.end - t.begin;  // stored quantized: as it is
    }
  }
  return total;
}

MemoryEstimate estimate_training_memory(const ModelConfig& c, uint64_t base_bytes,
                                        const MemoryRunShape& run, uint64_t resident) {
  MemoryEstimate e;
  e.resident = resident;
  e.base = base_bytes;
  // Value and gradient, plus the optimizer's moments.
  const uint64_t values = uint64_t(run.trainable_parameters) * sizeof(float);
  e.trained = values;
  e.gradients = values;
  e.moments = values * uint64_t(run.optimizer_slots);
  e.activations = activation_bytes(c, run.batch * run.seq, run.checkpointing);
  e.transient = uint64_t(double(e.activations) * kTransientShare);
  return e;
}

nlohmann::ordered_json MemoryEstimate::to_json() const {
  auto mib = [](uint64_t b) { return (b + (1u << 19)) >> 20; };
  return {{"base_mib", mib(base)},
          {"trained_mib", mib(trained)},
          {"gradients_mib", mib(gradients)},
          {"optimizer_moments_mib", mib(moments)},
          {"activations_mib", mib(activations)},
          {"transient_mib", mib(transient)},
          {"resident_mib", mib(resident)},
          {"total_mib", mib(total())}};
}

namespace {
// The "KEY: N kB" field of a /proc file, in bytes.
std::optional<uint64_t> proc_field_bytes(const char* file, const std::string& key) {
  std::ifstream in(file);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) {
      std::istringstream s(line.substr(key.size() + 1));
      uint64_t kib = 0;
      if (s >> kib) return kib * 1024;
    }
  return std::nullopt;
}
}  // namespace

std::optional<uint64_t> available_memory_bytes() {
  std::optional<uint64_t> available = proc_field_bytes("/proc/meminfo", "MemAvailable");
  std::string line;
  // cgroup v2: the limit of the group this process runs in, less what the group already uses.
  std::ifstream self("/proc/self/cgroup");
  while (std::getline(self, line)) {
    if (line.rfind("0::", 0) != 0) continue;
    const fs::path group = fs::path("/sys/fs/cgroup") / fs::path(line.substr(3)).relative_path();
    const auto limit = read_cgroup_number(group / "memory.max");
    const auto used = read_cgroup_number(group / "memory.current");
    if (limit) {
      const uint64_t room = *limit - std::min(*limit, used.value_or(0));
      available = available ? std::min(*available, room) : room;
    }
  }
  return available;
}

uint64_t resident_memory_bytes() {
  return proc_field_bytes("/proc/self/status", "VmRSS").value_or(0);
}

std::string format_mib(uint64_t bytes) {
  return std::to_string((bytes + (1u << 19)) >> 20) + " MiB";
}

}  // namespace lora
