#include "trainer/lora.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

#include "autograd/dora.h"

namespace lora {

float LoraConfig::effective_scale() const {
  if (scale) return *scale;
  if (rank <= 0)
    throw std::invalid_argument("LoRA rank must be positive, got " + std::to_string(rank));
  return float(rslora ? alpha / std::sqrt(double(rank)) : alpha / double(rank));
}

int64_t LoraConfig::first_layer(int64_t n_layers) const {
  if (num_layers < 0) return 0;
  return std::max<int64_t>(0, n_layers - num_layers);
}

LoraAdapter LoraAdapter::create(const Model& model, const LoraConfig& config, uint64_t seed) {
  if (config.rank <= 0)
    throw std::invalid_argument("LoRA rank must be positive, got " + std::to_string(config.rank));
  if (config.num_layers == 0 || config.num_layers < -1)
    throw std::invalid_argument("LoRA num_layers must be -1 (all) or positive, got " +
                                std::to_string(config.num_layers));
  if (config.dropout < 0.0f || config.dropout >= 1.0f)
    throw std::invalid_argument("LoRA dropout must be in [0, 1), got " +
                                std::to_string(config.dropout));
  LoraAdapter adapter;
  adapter.config = config;
  if (config.full) {
    if (model.config.fused_projections)
      throw std::invalid_argument(
          "full fine-tuning of a model with fused projections (qkv_proj, gate_up_proj) is not "
          "supported: train LoRA or DoRA on it");
    adapter.blocks = trained_blocks_from(model, config.num_layers);
    return adapter;
  }
  adapter.config.keys = block_keys(model.config, config.keys);
  const std::vector<Proj>& keys = adapter.config.keys;
  const float scale = config.effective_scale();
  // One generator for the whole adapter, consumed in (layer, proj) order: the same seed and config
  // give the same A matrices on any machine (the uniform is built from raw bits, not from a
  // library distribution whose algorithm is implementation-defined).
  std::mt19937_64 rng(seed);
  const int64_t n_layers = static_cast<int64_t>(model.layers.size());
  for (int64_t layer = config.first_layer(n_layers); layer < n_layers; ++layer)
    for (int p = 0; p < kNumProj; ++p) {
      const Proj proj = static_cast<Proj>(p);
      if (std::find(keys.begin(), keys.end(), proj) == keys.end()) continue;
      const FrozenWeight& w = model.layers[layer].at(proj);
      LoraModule m;
      m.layer = layer;
      m.proj = proj;
      m.scale = scale;
      m.A.value = Tensor({config.rank, w.cols});
      m.B.value = Tensor({w.rows, config.rank});
      // PEFT's kaiming_uniform_(a=sqrt(5)) on [r, in] is U(-1/sqrt(in), 1/sqrt(in)).
      const double bound = 1.0 / std::sqrt(double(w.cols));
      for (float& a : m.A.value.data) {
        const double u = double(rng() >> 11) * 0x1.0p-53;
        a = float((2.0 * u - 1.0) * bound);
      }
      m.A.zero_grad();
      m.B.zero_grad();
      if (config.dora) {
        // m = ||W|| per row: with B = 0 the adapted weight starts as the base's.
        m.magnitude.value = Tensor({w.rows}, ag::weight_row_norms(w, {}));
        m.magnitude.zero_grad();
      }
      adapter.modules.push_back(std::move(m));
    }
  return adapter;
}

LoraModule* LoraAdapter::find(int64_t layer, Proj proj) {
  for (LoraModule& m : modules)
    if (m.layer == layer && m.proj == proj) return &m;
  return nullptr;
}

const LoraModule* LoraAdapter::find(int64_t layer, Proj proj) const {
  for (const LoraModule& m : modules)
    if (m.layer == layer && m.proj == proj) return &m;
  return nullptr;
}

TrainedBlock* LoraAdapter::find_block(int64_t layer) {
  for (TrainedBlock& b : blocks)
    if (b.layer == layer) return &b;
  return nullptr;
}

std::vector<ag::Parameter*> LoraAdapter::parameters() {
  std::vector<ag::Parameter*> params;
  for (LoraModule& m : modules) {
    params.push_back(&m.A);
    params.push_back(&m.B);
    if (m.is_dora()) params.push_back(&m.magnitude);
  }
  for (TrainedBlock& b : blocks)
    for (ag::Parameter& p : b.tensors)
      if (p.value.numel() > 0) params.push_back(&p);
  return params;
}

int64_t LoraAdapter::num_parameters() const {
  int64_t n = 0;
  for (const LoraModule& m : modules)
    n += m.A.value.numel() + m.B.value.numel() + m.magnitude.value.numel();
  for (const TrainedBlock& b : blocks)
    for (const ag::Parameter& p : b.tensors) n += p.value.numel();
  return n;
}

}  // namespace lora
