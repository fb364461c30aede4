// Adapters with non-zero B for the merge and runtime-adapter tests (a fresh adapter has B = 0 and
// changes nothing), and logit comparisons.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "autograd/tensor.h"
#include "tests/support/test_support.h"
#include "trainer/io/adapter_file.h"
#include "trainer/lora.h"
#include "trainer/model.h"
#include "trainer/transformer.h"

namespace lora::test {

inline const char* kStories = "models/stories260K";

inline std::filesystem::path stories_dir() { return shared_dir() / kStories; }

// LoraAdapter::create (Kaiming A) with B filled from N(0, b_sigma): what a trained adapter looks
// like to merge and forward.
inline LoraAdapter adapter_with_random_b(const Model& model, std::vector<Proj> keys, int rank,
                                         float alpha, float b_sigma, uint64_t seed,
                                         int num_layers = -1) {
  LoraConfig config;
  config.rank = rank;
  config.alpha = alpha;
  config.keys = std::move(keys);
  config.num_layers = num_layers;
  LoraAdapter adapter = LoraAdapter::create(model, config, seed);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  std::normal_distribution<float> normal(0.0f, b_sigma);
  for (auto& m : adapter.modules)
    for (float& b : m.B.value.data) b = normal(rng);
  return adapter;
}

// The message AdapterFile::read fails with on `path`, or "" when it reads the adapter.
inline std::string adapter_read_error(const std::filesystem::path& path) {
  try {
    AdapterFile::read(path);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

inline float max_abs_diff(const Tensor& a, const Tensor& b) {
  EXPECT_EQ(a.shape, b.shape);
  float d = 0.0f;
  for (std::size_t i = 0; i < std::min(a.data.size(), b.data.size()); ++i)
    d = std::max(d, std::fabs(a.data[i] - b.data[i]));
  return d;
}

// Bit-exact equality of two logit tensors.
inline bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape == b.shape && a.data.size() == b.data.size() &&
         std::equal(a.data.begin(), a.data.end(), b.data.begin(),
                    [](float x, float y) { return std::memcmp(&x, &y, sizeof x) == 0; });
}

inline const std::vector<Proj> kAllProj = {Proj::q,    Proj::k,  Proj::v,   Proj::o,
                                           Proj::gate, Proj::up, Proj::down};

inline const std::vector<int32_t> kPromptIds = {1,  403, 261, 350, 1,   85,
                                                26, 417, 279, 62,  310, 499};

// Logits of kPromptIds split into `batch` rows, with the adapters stacked.
inline Tensor prompt_logits(const Model& model, std::vector<LoraAdapter*> adapters, int64_t batch) {
  AdapterStack stack;
  stack.adapters = std::move(adapters);
  return forward_logits(model, stack, kPromptIds, batch,
                        static_cast<int64_t>(kPromptIds.size()) / batch);
}

}  // namespace lora::test
