// A training run's peak memory, estimated from the model's config and weight headers before
// anything big is loaded: the floor it cannot do without (the base as stored, the LoRA state, the
// activations backward needs for one micro-batch), plus what was measured on top of it: the
// step's short-lived buffers and the allocator's slack (kTransientShare of the activations), and
// what the process already holds when the estimate is made (code, libraries, tokenizer, data
// index: its resident set then). The measured peak RSS lies within kEstimateMargin of the total
// (tests/test_memory_estimate.cpp on a run whose activations dominate; bench/train_throughput
// reports the ratio on the bench shapes).
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "trainer/model.h"
#include "trainer/model_config.h"

namespace lora {

// The activations backward keeps for `tokens` tokens (batch x sequence), in bytes: per block the
// block input and its norm (RMSNorm and the q/k/v LoRA inputs), q, k and v after RoPE, the
// attention output (o's input), the residual and its norm after attention, gate, up and their
// SwiGLU product (down's input); plus the final norm's input. With checkpointing only every
// block's input is kept, and one block's set while it is recomputed.
uint64_t activation_bytes(const ModelConfig& c, int64_t tokens, bool checkpointing);

// Trainable values of LoRA rank `rank` on `keys` in the last `num_layers` blocks (-1: all).
int64_t lora_parameter_count(const ModelConfig& c, int64_t rank, const std::vector<Proj>& keys,
                             int64_t num_layers);

// The bytes the base takes once loaded, from the weight files' headers (no tensor is read). With
// `quantize_bits` > 0 the block linears are counted as quantized at load, with a scale and a bias
// per group of `group_size`.
uint64_t base_bytes_of(const std::filesystem::path& model_dir, int quantize_bits = 0,
                       int group_size = 64);

// Trainable values of full fine-tuning of the last `num_layers` blocks (-1: all): the seven
// linears, the q/k/v biases and the norms the family has.
int64_t full_parameter_count(const ModelConfig& c, int64_t num_layers);

// Measured: peak RSS less the floor and the resident set, over the activations, stays under this
// share (stories260K batches of 8 x 512 with and without checkpointing; the bench shapes).
inline constexpr double kTransientShare = 0.25;
// The measured peak lies within this fraction of MemoryEstimate::total(), either way.
inline constexpr double kEstimateMargin = 0.25;

struct MemoryEstimate {
  uint64_t base = 0;         // the frozen model as held in memory
  uint64_t trained = 0;      // trainable values, f32 (LoRA A/B/m, or the full blocks' copies)
  uint64_t gradients = 0;    // their gradients, f32
  uint64_t moments = 0;      // the optimizer's moments, f32
  uint64_t activations = 0;  // what backward needs for one micro-batch
  uint64_t transient = 0;    // short-lived step buffers and allocator slack
  uint64_t resident = 0;     // held by the process when estimated (already in use)
  uint64_t floor() const { return base + trained + gradients + moments + activations; }
  uint64_t total() const { return floor() + transient + resident; }
  // What the run still has to allocate: compared with the memory available.
  uint64_t to_allocate() const { return total() - resident; }
  nlohmann::ordered_json to_json() const;  // MiB, rounded
};

struct MemoryRunShape {
  int64_t trainable_parameters = 0;
  int64_t optimizer_slots = 2;  // moments per trainable value: adam(w) 2, sgd with momentum 1
  int64_t batch = 1;
  int64_t seq = 1;  // the longest padded sequence of a batch
  bool checkpointing = false;
};

// `resident`: the bytes the process already holds (resident_memory_bytes() when estimating for
// this process).
MemoryEstimate estimate_training_memory(const ModelConfig& c, uint64_t base_bytes,
                                        const MemoryRunShape& run, uint64_t resident = 0);

// This process's resident set (VmRSS), 0 when unknown.
uint64_t resident_memory_bytes();

// Memory this process can still take: MemAvailable from /proc/meminfo, or less when a cgroup
// limit (memory.max less memory.current) is lower; nullopt when neither can be read.
std::optional<uint64_t> available_memory_bytes();

// "1234 MiB"
std::string format_mib(uint64_t bytes);

}  // namespace lora
