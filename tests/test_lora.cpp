// LoRA configuration and adapter creation.
#include <gtest/gtest.h>

#include <cmath>

#include "trainer/lora.h"
#include "trainer/random_model.h"

namespace lora {
namespace {

Model small_model() {
  ModelConfig c;
  c.model_type = "llama";
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_layers = 4;
  c.num_heads = 2;
  c.num_kv_heads = 1;
  c.head_dim = 8;
  c.vocab_size = 10;
  return make_random_model(c, 1);
}

TEST(LoraConfig, Scales) {
  LoraConfig c;
  c.rank = 16;
  c.alpha = 32;
  EXPECT_FLOAT_EQ(c.effective_scale(), 2.0f);
  c.rslora = true;
  EXPECT_FLOAT_EQ(c.effective_scale(), 8.0f);
  c.scale = 20.0f;  // mlx-lm's explicit scale wins
  EXPECT_FLOAT_EQ(c.effective_scale(), 20.0f);
}

TEST(LoraConfig, FirstLayer) {
  LoraConfig c;
  EXPECT_EQ(c.first_layer(30), 0);
  c.num_layers = 4;
  EXPECT_EQ(c.first_layer(30), 26);
  c.num_layers = 40;
  EXPECT_EQ(c.first_layer(30), 0);
}

TEST(LoraAdapter, CreateShapesInitAndOrder) {
  const Model model = small_model();
  LoraConfig c;
  c.rank = 4;
  c.num_layers = 2;
  c.keys = {Proj::down, Proj::q, Proj::v};  // any order in; (layer, proj) order out
  const LoraAdapter a = LoraAdapter::create(model, c, 7);
  ASSERT_EQ(a.modules.size(), 6u);
  const Proj order[] = {Proj::q, Proj::v, Proj::down};
  for (std::size_t i = 0; i < a.modules.size(); ++i) {
    const LoraModule& m = a.modules[i];
    EXPECT_EQ(m.layer, 2 + int64_t(i / 3));
    EXPECT_EQ(m.proj, order[i % 3]);
    const FrozenWeight& w = model.layers[m.layer].at(m.proj);
    EXPECT_EQ(m.A.value.shape, (std::vector<int64_t>{4, w.cols}));
    EXPECT_EQ(m.B.value.shape, (std::vector<int64_t>{w.rows, 4}));
    const double bound = 1.0 / std::sqrt(double(w.cols));
    double max_abs = 0;
    for (float v : m.A.value.data) max_abs = std::max(max_abs, std::abs(double(v)));
    EXPECT_LE(max_abs, bound);
    EXPECT_GT(max_abs, 0.5 * bound);  // spread over the range, not all tiny
    for (float v : m.B.value.data) EXPECT_EQ(v, 0.0f);
    EXPECT_FLOAT_EQ(m.scale, 4.0f);  // alpha 16 / rank 4
  }
  EXPECT_EQ(a.num_parameters(), [&] {
    int64_t n = 0;
    for (const LoraModule& m : a.modules) n += m.A.value.numel() + m.B.value.numel();
    return n;
  }());
  EXPECT_EQ(a.find(3, Proj::v), &a.modules[4]);
  EXPECT_EQ(a.find(1, Proj::q), nullptr);
  EXPECT_EQ(a.find(2, Proj::k), nullptr);
}

TEST(LoraAdapter, SeedDeterminesA) {
  const Model model = small_model();
  LoraConfig c;
  LoraAdapter a = LoraAdapter::create(model, c, 1), b = LoraAdapter::create(model, c, 1),
              d = LoraAdapter::create(model, c, 2);
  EXPECT_EQ(a.modules[0].A.value.data, b.modules[0].A.value.data);
  EXPECT_NE(a.modules[0].A.value.data, d.modules[0].A.value.data);
  const auto params = a.parameters();
  ASSERT_EQ(params.size(), 2 * a.modules.size());
  EXPECT_EQ(params[0], &a.modules[0].A);
  EXPECT_EQ(params[1], &a.modules[0].B);
}

TEST(LoraAdapter, BadConfigIsAnError) {
  const Model model = small_model();
  LoraConfig c;
  c.rank = 0;
  EXPECT_THROW(LoraAdapter::create(model, c, 1), std::invalid_argument);
  c.rank = 4;
  c.dropout = 1.0f;
  EXPECT_THROW(LoraAdapter::create(model, c, 1), std::invalid_argument);
  c.dropout = 0.0f;
  c.num_layers = 0;
  EXPECT_THROW(LoraAdapter::create(model, c, 1), std::invalid_argument);
}

}  // namespace
}  // namespace lora
