// Folding LoRA adapters into a base model folder: W' = W + strength * scale * B A (DoRA: the rows
// of that rescaled to the trained magnitudes, m * V / ||V||), computed in f32, written in the
// base's storage (float dtype, or MLX quantization with the same bits and group size), with a
// report of how much of each delta the stored weights really carry.
#pragma once
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "autograd/dtype.h"
#include "trainer/io/adapter_file.h"

namespace lora {

struct MergeAdapter {
  AdapterFile adapter;
  double strength = 1.0;
};

struct MergeOptions {
  // Quantized base: write float weights (in float_dtype) instead of requantizing.
  bool dequantize = false;
  // The float type of dequantized weights; default: the dtype of each tensor's scales.
  std::optional<DType> float_dtype;
  // Quantized base: the float weights it was quantized from. The delta is added to these and the
  // sum quantized once, instead of dequantize -> add -> requantize.
  std::optional<std::filesystem::path> base_float;
  // A merged linear that keeps less of its delta than this gets a warning.
  double min_delta_kept = 0.9;
  uint64_t max_shard_bytes = 5'000'000'000;
};

// How much of the intended delta D a stored linear carries. With C the change actually stored
// (W'_stored - W_stored): kept = <C, D> / <D, D>, the share of D that C realizes (noise that
// rounding adds is not counted as kept, unlike the plain norm ratio ||C|| / ||D||, also given);
// max_error = max |C - D|.
struct MergeFidelity {
  double delta_norm = 0.0;   // ||D||
  double change_norm = 0.0;  // ||C||
  double dot = 0.0;          // <C, D>
  double max_error = 0.0;
  double kept() const;
  double norm_ratio() const;
  void add(const MergeFidelity& other);
};
MergeFidelity measure_fidelity(std::span<const float> change, std::span<const float> delta);

struct MergedLinear {
  std::string tensor;   // "model.layers.0.self_attn.q_proj.weight"
  std::string storage;  // "F32", "BF16", "q4g64" ...
  MergeFidelity fidelity;
};

struct MergeReport {
  std::vector<MergedLinear> merged;
  std::vector<std::pair<std::string, std::string>> skipped;  // (module, why)
  MergeFidelity total;
  std::vector<std::string> warnings;
  nlohmann::json to_json() const;
  std::string to_text() const;  // a table for people (warnings not included)
};

// Merges `adapters` into the model in `model_dir` and writes the complete merged model folder to
// `out_dir` (atomically; nothing is written when any check fails). Tensors no adapter touches are
// copied byte for byte, so strength 0 copies the base exactly.
MergeReport merge_adapters(const std::filesystem::path& model_dir,
                           std::span<const MergeAdapter> adapters,
                           const std::filesystem::path& out_dir, const MergeOptions& options = {});

// A full fine-tuning (trainer/io/full_adapter.h) written into a complete model folder: each trained
// tensor replaces the base's, stored in the base's float dtype (the report gives what that
// rounding keeps of each change); every other tensor is copied byte for byte. A quantized base
// is refused (full fine-tuning trains float bases only).
MergeReport merge_full_finetune(const std::filesystem::path& model_dir,
                                const std::filesystem::path& adapter_path,
                                const std::filesystem::path& out_dir,
                                const MergeOptions& options = {});

}  // namespace lora
