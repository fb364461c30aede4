// LoRA adapters over a model's projections: configuration, initialization, and the per-layer
// branches the transformer forward applies.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "autograd/ops.h"
#include "trainer/model.h"
#include "trainer/trained_block.h"

namespace lora {

struct LoraConfig {
  int rank = 8;
  double alpha = 16.0;         // scale = alpha / rank (or alpha / sqrt(rank) with rslora);
                               // double, so that files give back the number the user gave
  std::optional<float> scale;  // when set, used as is (mlx-lm's lora_parameters.scale)
  bool rslora = false;
  float dropout = 0.0f;
  std::vector<Proj> keys = {Proj::q, Proj::v};
  int num_layers = -1;  // last N blocks; -1 = all
  // DoRA (weight-decomposed LoRA, autograd/dora.h): every module also trains a magnitude m [out],
  // initialized to the norms of the base weight's rows.
  bool dora = false;
  // Full fine-tuning (trainer/trained_block.h): the blocks' own tensors train instead of LoRA
  // pairs; rank, scale, dropout and keys do not apply.
  bool full = false;

  float effective_scale() const;
  // First adapted block index for a model with n layers.
  int64_t first_layer(int64_t n_layers) const;
};

struct LoraModule {
  int64_t layer = 0;
  Proj proj = Proj::q;
  ag::Parameter A;  // [rank, in]
  ag::Parameter B;  // [out, rank]
  float scale = 1.0f;
  ag::Parameter magnitude;  // DoRA's m [out]; empty for plain LoRA

  bool is_dora() const { return magnitude.value.numel() > 0; }
};

// All modules of one adapter, in (layer, proj) order.
struct LoraAdapter {
  LoraConfig config;
  std::vector<LoraModule> modules;
  std::vector<TrainedBlock> blocks;  // full fine-tuning only, ascending layers
  bool enabled = true;               // runtime toggle: off = the base alone, nothing unloaded
  float strength = 1.0f;             // runtime multiplier on every module's scale

  // Kaiming-uniform A (U(-1/sqrt(in), 1/sqrt(in))), zero B, deterministic from seed. The keys
  // are mapped to the model's projections (block_keys).
  // With config.full: the blocks' f32 copies of the base's tensors instead (no randomness).
  static LoraAdapter create(const Model& model, const LoraConfig& config, uint64_t seed);
  LoraModule* find(int64_t layer, Proj proj);
  const LoraModule* find(int64_t layer, Proj proj) const;
  TrainedBlock* find_block(int64_t layer);
  // A, B (and DoRA's m) for each module, in order; then each trained block's tensors, in
  // BlockTensor order.
  std::vector<ag::Parameter*> parameters();
  int64_t num_parameters() const;
};

}  // namespace lora
